"""Alembic environment of the live store (applied programmatically by live.store.db)."""
