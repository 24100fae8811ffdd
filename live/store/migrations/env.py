"""Alembic environment: runs on the connection live.store.db hands over in `config.attributes`."""
from __future__ import annotations

from alembic import context

from live.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: the URL comes from the ini's sqlalchemy.url
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
