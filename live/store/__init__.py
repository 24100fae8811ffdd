"""The live VMM's durable store: VMs and their transitions, requests, allocations, cloud health.

`open_store(url)` returns a `Store` (live.store.repo) over SQLite (WAL) or PostgreSQL, migrated to the
newest schema by Alembic before it is used.
"""
from live.store.db import open_store
from live.store.repo import Store, StoreError

__all__ = ["Store", "StoreError", "open_store"]
