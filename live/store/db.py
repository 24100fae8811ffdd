"""Engine setup: SQLite with WAL by default, PostgreSQL by URL; Alembic migrations applied at open.

Several VMM instances may share one PostgreSQL database (one leads, see live.leader); SQLite is for
one instance (plus the portal and tests, which WAL lets read while the VMM writes).
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0002"  # the newest revision in migrations/versions (a test holds the two together)


def make_engine(url: str) -> Engine:
    """An engine for `url` (`sqlite:///PATH` or `postgresql+psycopg://...`)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: readers never block the VMM's writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already).

    A schema already at HEAD is recognised without importing Alembic, which costs most of a second
    of start-up: a restarted VMM should be back at work at once.
    """
    with engine.connect() as conn:
        if (inspect(conn).has_table("alembic_version")
                and conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD):
            return
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two instances starting at once must not both create the tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(7243001)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_store(url: str, *, migrate_schema: bool = True):
    """A migrated `Store` on `url`."""
    from live.store.repo import Store

    engine = make_engine(url)
    if migrate_schema:
        migrate(engine)
    return Store(engine)
