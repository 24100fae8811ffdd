"""The DMS orchestrator: turns a transfer request into ordered HTTP-TPC copies and tracks them.

A request names a source (the archive's base URL), files (explicit paths, or a directory whose
manifest is fetched), a destination (a DMTS base URL), an ordering adapter from
`core.transfer_order`, and streams per file. The orchestrator plans the order with
`plan_transfer` (pure), then a few worker threads take the files in that order and ask the DMTS to
pull each one (`dms.client.TpcCopy`), so the first files of the plan are the first to arrive.

State is kept in memory while a transfer runs and written to a small SQLite file on every state
change of a transfer or a file, so a restarted API still reports finished transfers; a transfer
that was running when the API stopped is reported `failed` ("interrupted").

Every step is logged in the common event schema (`core.events.Event`), with the transfer kinds of
`core.events` (`transfer_submit`, `transfer_file_done`, ...), so one report reads them beside the VMM's.
"""
from __future__ import annotations

import json
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import events
from core.ports import TransferState, TransferStatus
from core.transfer_order import FileEntry, plan_transfer
from dms import client

# The steps a transfer logs: event kinds of the common schema.
DMS_SUBMIT = events.TRANSFER_SUBMIT
DMS_FILE_DONE = events.TRANSFER_FILE_DONE
DMS_FILE_FAILED = events.TRANSFER_FILE_FAILED
DMS_DONE = events.TRANSFER_DONE
DMS_FAILED = events.TRANSFER_FAILED
DMS_CANCELLED = events.TRANSFER_CANCELLED
DMS_INTERRUPTED = events.TRANSFER_INTERRUPTED

# Below this many bytes per stream another stream costs more (a TLS handshake, a request) than it
# gains; small files go with fewer streams than asked.
MIN_BYTES_PER_STREAM = 16 * 2**20

FINAL_STATES = frozenset({TransferState.DONE, TransferState.FAILED, TransferState.CANCELLED})


@dataclass(frozen=True)
class TransferRequest:
    """A validated request (the API validates; this only carries it)."""

    source: str  # base URL of the archive's source endpoint
    destination: str  # base URL of the DMTS; files land at destination + '/' + path
    paths: tuple[str, ...] = ()
    directory: str | None = None
    adapter: str = "everything"
    streams: int = 1
    cwd: str | None = None  # for the adapters; default: the directory, else ""
    parallel_files: int = 4
    verify_checksum: bool = True


@dataclass
class FileProgress:
    path: str
    size: int
    state: str = "queued"  # queued, running, done, failed, cancelled
    bytes_done: int = 0
    error: str | None = None
    started: float | None = None
    finished: float | None = None


@dataclass
class Transfer:
    id: str
    request: TransferRequest
    user: str | None
    created: float
    state: TransferState = TransferState.QUEUED
    files: list[FileProgress] = field(default_factory=list)
    error: str | None = None
    finished: float | None = None

    def summary(self) -> dict:
        done = [f for f in self.files if f.state == "done"]
        return {
            "id": self.id, "state": str(self.state), "user": self.user, "created": self.created,
            "finished": self.finished, "error": self.error,
            "source": self.request.source, "destination": self.request.destination,
            "adapter": self.request.adapter, "streams": self.request.streams,
            "files_done": len(done), "files_total": len(self.files),
            "bytes_done": sum(f.size if f.state == "done" else f.bytes_done for f in self.files),
            "bytes_total": sum(f.size for f in self.files),
        }

    def to_dict(self, *, with_files: bool = True) -> dict:
        d = self.summary()
        if with_files:
            d["files"] = [dict(vars(f)) for f in self.files]  # flat fields: asdict's deep copy is 10x slower
        return d


def streams_for(size: int, asked: int) -> int:
    """Streams for a file of `size` bytes when `asked` were requested: at most one per MIN_BYTES_PER_STREAM."""
    return max(1, min(asked, size // MIN_BYTES_PER_STREAM))


class Store:
    """Transfers in SQLite: one row a transfer, its request and files as JSON (rewritten on each change)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS transfers (id TEXT PRIMARY KEY, created REAL, doc TEXT)")

    def save(self, t: Transfer) -> None:
        doc = json.dumps({"request": asdict(t.request), **t.to_dict()})
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO transfers (id, created, doc) VALUES (?, ?, ?)",
                             (t.id, t.created, doc))

    def load_all(self) -> list[Transfer]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM transfers ORDER BY created").fetchall()
        out = []
        for (doc,) in rows:
            d = json.loads(doc)
            req = d["request"]
            req["paths"] = tuple(req.get("paths") or ())
            t = Transfer(id=d["id"], request=TransferRequest(**req), user=d.get("user"), created=d["created"],
                         state=TransferState(d["state"]), error=d.get("error"), finished=d.get("finished"),
                         files=[FileProgress(**f) for f in d.get("files", [])])
            out.append(t)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


class EventLog:
    """Appends events, one JSON line each, to a file (or nowhere); thread-safe."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._file = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, kind: str, *, user: str | None, **details) -> events.Event:
        ev = events.Event(t=time.time(), kind=kind, user=user, details=details)
        if self.path:
            line = ev.to_json() + "\n"
            with self._lock:
                if self._file is None:  # kept open: an event per file of a large directory
                    self._file = self.path.open("a", buffering=1)
                self._file.write(line)
        return ev

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Orchestrator:
    """Runs transfers; implements `core.ports.TransferService` (start/status/cancel) plus `submit`."""

    def __init__(self, *, store: Store, tls: ssl.SSLContext | None, log: EventLog,
                 fetch_manifest: Callable[[str], object] | None = None, copy_timeout: float = client.DEFAULT_TIMEOUT):
        self.store, self.tls, self.log = store, tls, log
        self.fetch_manifest = fetch_manifest
        self.copy_timeout = copy_timeout
        self._lock = threading.Lock()
        self._transfers: dict[str, Transfer] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._copies: dict[str, set[client.TpcCopy]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._saved: dict[str, float] = {}
        # Kept-alive connections to the DMTSs: a COPY per small file would otherwise cost a TLS handshake.
        self.pool = client.ConnectionPool()
        for t in store.load_all():
            if t.state not in FINAL_STATES:
                t.state, t.error, t.finished = TransferState.FAILED, "interrupted: the DMS API stopped", time.time()
                for f in t.files:
                    if f.state in ("queued", "running"):
                        f.state = "failed"
                        f.error = "interrupted"
                store.save(t)
                log.emit(DMS_INTERRUPTED, user=t.user, transfer=t.id)
            self._transfers[t.id] = t

    # -- planning -------------------------------------------------------------------------------
    def plan(self, request: TransferRequest) -> list[FileEntry]:
        """The files of `request` in the order the adapter gives; raises ManifestError / LookupError."""
        if request.directory is not None:
            files = client.fetch_manifest(request.source, request.directory, tls=self.tls, fetch=self.fetch_manifest)
            cwd = request.cwd if request.cwd is not None else request.directory
        else:
            by_dir: dict[str, dict[str, FileEntry]] = {}
            files = []
            missing = []
            for p in request.paths:
                parent = p.rsplit("/", 1)[0] if "/" in p else ""
                if parent not in by_dir:
                    by_dir[parent] = {e.path: e for e in client.fetch_manifest(request.source, parent, tls=self.tls,
                                                                      recursive=False, fetch=self.fetch_manifest)}
                entry = by_dir[parent].get(p)
                if entry is None:
                    missing.append(p)
                else:
                    files.append(entry)
            if missing:
                raise LookupError(f"not in the source's manifest: {', '.join(missing[:10])}")
            cwd = request.cwd if request.cwd is not None else ""
        return plan_transfer(files, request.adapter, cwd=cwd)

    def busy_destinations(self, request: TransferRequest, planned: Sequence[FileEntry]) -> list[str]:
        """Destination paths of `planned` that an unfinished transfer to the same DMTS is writing."""
        mine = {f.path for f in planned}
        dest = request.destination.rstrip("/")
        clash = []
        with self._lock:
            for t in self._transfers.values():
                if t.state in FINAL_STATES or t.request.destination.rstrip("/") != dest:
                    continue
                clash.extend(f.path for f in t.files if f.path in mine and f.state in ("queued", "running"))
        return clash

    # -- the TransferService port ---------------------------------------------------------------
    def start(self, *, source: str, destination: str, paths: Sequence[str], streams: int) -> str:
        req = TransferRequest(source=source, destination=destination, paths=tuple(paths), streams=streams)
        return self.submit(req, self.plan(req), user=None)

    def status(self, *, transfer_id: str) -> TransferStatus:
        s = self.get(transfer_id).summary()
        return TransferStatus(id=transfer_id, state=TransferState(s["state"]), bytes_done=s["bytes_done"],
                              bytes_total=s["bytes_total"], files_done=s["files_done"],
                              files_total=s["files_total"], error=s["error"])

    def cancel(self, *, transfer_id: str) -> None:
        with self._lock:
            t = self._transfers[transfer_id]
            ev = self._cancel.get(transfer_id)
            copies = list(self._copies.get(transfer_id, ()))
        if t.state in FINAL_STATES or ev is None:
            return
        ev.set()
        for c in copies:
            c.cancel()

    # -- the rest -------------------------------------------------------------------------------
    def get(self, transfer_id: str) -> Transfer:
        with self._lock:
            return self._transfers[transfer_id]

    def list(self) -> list[Transfer]:
        with self._lock:
            return sorted(self._transfers.values(), key=lambda t: t.created)

    def submit(self, request: TransferRequest, planned: Sequence[FileEntry], *, user: str | None) -> str:
        tid = uuid.uuid4().hex[:16]
        t = Transfer(id=tid, request=request, user=user, created=time.time(),
                     files=[FileProgress(path=f.path, size=f.size) for f in planned])
        checksums = {f.path: f.checksum for f in planned}
        with self._lock:
            self._transfers[tid] = t
            self._cancel[tid] = threading.Event()
            self._copies[tid] = set()
        self.store.save(t)
        self.log.emit(DMS_SUBMIT, user=user, transfer=tid, source=request.source,
                      destination=request.destination, adapter=request.adapter, streams=request.streams,
                      files=len(t.files), bytes=sum(f.size for f in t.files))
        th = threading.Thread(target=self._run, args=(t, checksums), name=f"dms-{tid}", daemon=True)
        self._threads[tid] = th
        th.start()
        return tid

    def wait(self, transfer_id: str, timeout: float | None = None) -> Transfer:
        th = self._threads.get(transfer_id)
        if th is not None:
            th.join(timeout)
        return self.get(transfer_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        for tid in list(self._threads):
            self.cancel(transfer_id=tid)
        for th in list(self._threads.values()):
            th.join(timeout)
        self.pool.close()
        self.log.close()

    def _run(self, t: Transfer, checksums: dict[str, str | None]) -> None:
        cancel = self._cancel[t.id]
        req = t.request
        t.state = TransferState.RUNNING
        self.store.save(t)
        queue = list(t.files)  # already in plan order
        qlock = threading.Lock()

        def next_file() -> FileProgress | None:
            with qlock:
                return queue.pop(0) if queue and not cancel.is_set() else None

        def worker() -> None:
            while (f := next_file()) is not None:
                self._copy_one(t, f, checksums.get(f.path), cancel)

        workers = [threading.Thread(target=worker, daemon=True, name=f"dms-{t.id}-{i}")
                   for i in range(max(1, min(req.parallel_files, len(t.files) or 1)))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        failed = [f for f in t.files if f.state == "failed"]
        if cancel.is_set():
            for f in t.files:
                if f.state in ("queued", "running"):
                    f.state = "cancelled"
            t.state = TransferState.CANCELLED
            step = DMS_CANCELLED
        elif failed:
            t.state = TransferState.FAILED
            t.error = f"{len(failed)} file(s) failed; first: {failed[0].path}: {failed[0].error}"
            step = DMS_FAILED
        else:
            t.state = TransferState.DONE
            step = DMS_DONE
        t.finished = time.time()
        self.store.save(t)
        s = t.summary()
        self.log.emit(step, user=t.user, transfer=t.id, files_done=s["files_done"], files_total=s["files_total"],
                      bytes_done=s["bytes_done"], seconds=round(t.finished - t.created, 3), error=t.error)
        with self._lock:
            self._copies.pop(t.id, None)

    def _copy_one(self, t: Transfer, f: FileProgress, checksum: str | None, cancel: threading.Event) -> None:
        req = t.request

        def progress(p: client.Progress) -> None:
            f.bytes_done = p.bytes_done

        job = client.TpcCopy(client.join_url(req.source, f.path), client.join_url(req.destination, f.path),
                             streams=streams_for(f.size, req.streams), tls=self.tls,
                             checksum=checksum if req.verify_checksum else None,
                             on_progress=progress, timeout=self.copy_timeout, pool=self.pool)
        with self._lock:
            self._copies[t.id].add(job)
        f.state, f.started = "running", time.time()
        try:
            if cancel.is_set():
                raise client.CopyCancelled("cancelled")
            job.run()
        except client.CopyCancelled:
            f.state = "cancelled"
        except (client.CopyError, ValueError, OSError) as e:
            f.state, f.error = "failed", str(e)
            self.log.emit(DMS_FILE_FAILED, user=t.user, transfer=t.id, path=f.path, error=str(e))
        else:
            f.state, f.bytes_done = "done", f.size
            self.log.emit(DMS_FILE_DONE, user=t.user, transfer=t.id, path=f.path, bytes=f.size,
                          seconds=round(time.time() - f.started, 3))
        finally:
            f.finished = time.time()
            with self._lock:
                self._copies[t.id].discard(job)
                # Rewriting the whole document per file would cost O(files^2) bytes for big
                # directories; a restart loses at most half a second of per-file detail.
                due = time.monotonic() - self._saved.get(t.id, 0.0) > 0.5
                if due:
                    self._saved[t.id] = time.monotonic()
            if due:
                self.store.save(t)
