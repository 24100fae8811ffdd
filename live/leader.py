"""Leader election: exactly one VMM instance runs passes at a time.

PostgreSQL: `pg_try_advisory_lock` on a dedicated connection held for the leader's whole life; the
server releases it when that connection dies (a crashed or killed leader), and the next instance to
try takes over. SQLite: one instance only, enforced with an exclusive `flock` on a file beside the
database (the kernel releases it when the process dies).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

LOCK_KEY = 7243002  # the advisory lock's key: daaas's VMM leadership


class PgLeader:
    """Leadership through a PostgreSQL advisory lock held on its own connection."""

    def __init__(self, engine: Engine, key: int = LOCK_KEY):
        self._engine, self._key, self._conn = engine, key, None

    def acquire(self) -> bool:
        """Try to lead (never blocks); True while this instance leads."""
        if self._conn is not None:
            try:  # still our session? A dropped connection means the lock is gone with it.
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:
                self.release()
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar())
        except Exception:
            conn.close()
            raise
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            except Exception:
                pass
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


class FileLeader:
    """Single-instance guard for SQLite: an exclusive, non-blocking flock on `path`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def leader_for(engine: Engine):
    """The right election for the store's database."""
    if engine.dialect.name == "postgresql":
        return PgLeader(engine)
    db = engine.url.database
    if not db or db == ":memory:":
        return FileLeader(Path(os.environ.get("TMPDIR", "/tmp")) / f"daaas-vmm-{os.getpid()}.lock")
    return FileLeader(db + ".leader.lock")
