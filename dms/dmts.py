"""The DMTS destination endpoint: WLCG HTTP third-party copy in pull mode.

`COPY /dest/path` with `Source: https://archive/path` makes this server pull the file:

- exactly one of `Source` (pull) or `Destination` (push) is required (both or neither: 400; push: 501);
- `X-Number-Of-Streams: N` (1..max_streams) parallel Range GETs, one worker thread and one TLS
  connection each (kept alive in `DmtsServer.pool` for the next HEAD or GET to the same source);
  a fresh transfer starts with a GET of the first MiB, whose answer says what a HEAD would (size in
  `Content-Range`, ETag, mode, mtime, Digest), so a small file costs one request;
  `TransferHeader<Name>: v` is sent to the source as `<Name>: v`;
  `Overwrite: F` refuses an existing destination (412); `Credential:` is accepted and ignored (the
  DMTS presents its own service certificate, `client_tls`);
- optional `X-Daaas-Checksum: <algo>:<hex>` (what the manifest says), `X-Daaas-Mode: 0644`,
  `X-Daaas-Mtime: <float>`, `X-Daaas-Owner: uid:gid` override what the source's HEAD reports
  (a daaas source reports mode, mtime and owner from the same stat as its manifest);
- the answer is 202 with a chunked stream of perf-marker blocks (one per stream, at least every
  `marker_interval` s) and a final `success: Created` or `failure: <reason>` line.

The body is written with `os.pwrite` into `.<name>.daaas-part` (preallocated) beside the
destination; completed ranges with their adler32 go to `.<name>.daaas-journal`, flushed in the
background about every second (data fdatasync'd before each journal fsync; a transfer that ends before
its first flush never writes a journal). After all ranges arrive, the checksum (per-range adler32 combined, or a
re-read for md5/sha-256) is compared with the client's and the source's RFC 3230 `Digest`; only a
verified file is renamed to its final name. Network faults are retried per stream from the last
byte written; a transfer that still fails keeps the part file and journal so that the next COPY of
the same source resumes with only the missing ranges. A client disconnect, a checksum mismatch, a
full disk or a source that refuses the file removes both.

The destination namespace also answers HEAD/GET (with Digest), PROPFIND, DELETE, MKCOL, PUT and
POST (501: no macaroons) for davix and gfal2.
"""
from __future__ import annotations

import dataclasses
import email.utils
import errno
import http.client
import json
import logging
import math
import os
import queue
import select
import ssl
import stat
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from dms import checksum as ck
from dms.client import STALE_ERRORS, ConnectionPool
from dms.paths import PathError, resolve_under
from dms.source import DmsHTTPServer, FileHandler
from dms.tls import TlsConfig

log = logging.getLogger("dms.dmts")
# Bytes read from the socket per pwrite. A read that a cut interrupts loses what it had gathered, so
# this is also what a retry may fetch again; 256 KiB keeps that small at a negligible cost in calls.
READ_BLOCK = 256 * 1024
FIRST_GET = 1024 * 1024  # the first request fetches this much: a small file in one request
PIECE = 16 * 1024 * 1024  # journal granularity: at most this much is fetched again after a crash
MAX_CHUNK = 256 * 1024 * 1024
MIN_CHUNK = 256 * 1024
PART_SUFFIX = ".daaas-part"
JOURNAL_SUFFIX = ".daaas-journal"


class ThreadCache:
    """Runs callables on reused threads, each kept `idle_seconds` after its last job.

    Starting a thread costs about a millisecond on a busy VM, as much as the rest of a small file's
    copy; a transfer's worker and its streams therefore come from here.
    """

    def __init__(self, idle_seconds: float = 60.0):
        self.idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job that no submit() has counted on yet

    def submit(self, fn, *args) -> threading.Event:
        """Run fn(*args) on an idle thread (or a new one); the returned event is set when it has returned."""
        done = threading.Event()
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put((fn, args, done))
        if spawn:
            threading.Thread(target=self._loop, name="dmts-worker", daemon=True).start()
        return done

    def _loop(self) -> None:
        while True:
            try:
                fn, args, done = self._jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody counts on this thread: let it go
                        self._idle -= 1
                        return
                continue  # a submit() counted on this thread: its job is on the way
            try:
                fn(*args)
            except BaseException:  # the callables handle their errors; this only keeps the thread alive
                log.exception("worker job %r", fn)
            finally:
                done.set()
                with self._lock:
                    self._idle += 1


class TransferFailed(Exception):
    """A transfer that cannot complete; `keep` says whether the part file is worth resuming."""

    def __init__(self, message: str, *, keep: bool = False):
        super().__init__(message)
        self.keep = keep


def part_paths(final: Path) -> tuple[Path, Path]:
    return final.with_name(f".{final.name}{PART_SUFFIX}"), final.with_name(f".{final.name}{JOURNAL_SUFFIX}")


class Journal:
    """Completed ranges of a part file, persisted so that a later transfer resumes from them."""

    def __init__(self, path: Path, header: dict, *, interval: float = 1.0):
        self.path = path
        self.header = header
        self.interval = interval
        self.pieces: list[tuple[int, int, int]] = []
        self._pending: list[tuple[int, int, int]] = []
        self._lock = threading.Lock()  # guards pieces/_pending; held only for list operations
        self._io_lock = threading.Lock()  # one flush at a time
        self._fd: int | None = None
        self._data_fd: int | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.error: OSError | None = None

    def load(self) -> bool:
        """Read the pieces of an earlier attempt at the same source version; False (and reset) otherwise."""
        try:
            lines = self.path.read_text().splitlines()
            if not lines or json.loads(lines[0]) != self.header:
                return False
            for line in lines[1:]:
                parts = line.split()
                if len(parts) == 3:  # a torn last line is ignored: that piece is fetched again
                    self.pieces.append((int(parts[0]), int(parts[1]), int(parts[2], 16)))
            return True
        except (OSError, ValueError):
            self.pieces = []
            return False

    def open(self, fresh: bool, data_fd: int, *, background: bool = True) -> None:
        """Get ready to record pieces; with `background`, flush them every `interval` s in a thread.

        The flush (fdatasync of the data, then the journal's fsync) runs in its own thread so that the
        streams never wait for the disk to catch up. A fresh journal is created by its first flush
        (header and pieces in one fsync), so a small file that arrives within a second never has one;
        an older journal is removed first, since its pieces do not describe the new part file.
        """
        self._data_fd = data_fd
        if fresh:
            self.pieces = []
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if background:
            self._flusher = threading.Thread(target=self._flush_loop, name="dmts-journal", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except OSError as e:
                self.error = e  # reported by the final flush; the transfer itself may still succeed
                return

    def add(self, start: int, end: int, adler: int) -> None:
        with self._lock:
            self.pieces.append((start, end, adler))
            self._pending.append((start, end, adler))

    def flush(self) -> None:
        with self._io_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending or self._data_fd is None:
                return
            # Every pending piece was written before it was added: sync the data first, so that the
            # journal never claims bytes the disk lacks.
            os.fdatasync(self._data_fd)
            text = "".join(f"{s} {e} {a:08x}\n" for s, e, a in pending)
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                text = json.dumps(self.header) + "\n" + text
            os.write(self._fd, text.encode())
            os.fsync(self._fd)

    def close(self) -> None:
        """Stop the background flusher (the journal file stays open for a last `flush()`)."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None

    def close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def missing_ranges(size: int, pieces: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for s, e, _ in sorted(pieces):
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < size:
        out.append((pos, size))
    return out


def combined_adler32(size: int, pieces: list[tuple[int, int, int]]) -> int | None:
    """adler32 of the whole file from its pieces, or None if they do not tile [0, size) exactly."""
    value, pos = 1, 0
    for s, e, a in sorted(pieces):
        if s != pos:
            return None
        value = ck.adler32_combine(value, a, e - s)
        pos = e
    return value if pos == size else None


class ChunkQueue:
    """Chunks dealt round-robin to the streams; a stream whose share is done takes from the fullest other.

    Dealing first (rather than one shared queue) makes every stream carry its part even when one
    thread starts before the others; taking from the others keeps a fast stream busy to the end.
    """

    def __init__(self, chunks: list[tuple[int, int]], streams: int):
        self._lock = threading.Lock()
        self._shares: list[list[tuple[int, int]]] = [chunks[i::streams][::-1] for i in range(streams)]
        self._started = [False] * streams

    def take(self, i: int) -> tuple[int, int] | None:
        with self._lock:
            self._started[i] = True
            share = self._shares[i]
            if not share:  # never take from a stream that has not started: it will do its own share
                others = [s for j, s in enumerate(self._shares) if self._started[j]]
                share = max(others, key=len)
            return share.pop() if share else None


@dataclass
class TransferState:
    """Progress of one COPY, readable from other threads (`DmtsServer.transfers`)."""

    id: str
    source: str
    destination: str
    streams: int
    size: int | None = None
    stream_bytes: list[int] = field(default_factory=list)
    resumed_bytes: int = 0
    state: str = "running"  # running, succeeded, failed, cancelled
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def snapshot(self) -> dict:
        return {"id": self.id, "source": self.source, "destination": self.destination, "streams": self.streams,
                "size": self.size, "bytes": sum(self.stream_bytes) + self.resumed_bytes,
                "resumed_bytes": self.resumed_bytes, "state": self.state, "error": self.error,
                "started": self.started, "finished": self.finished}


@dataclass(frozen=True)
class CopyRequest:
    source: str
    final: Path
    streams: int
    forward: tuple[tuple[str, str], ...]
    expected: tuple[str, str] | None
    mode: int | None
    mtime: float | None
    owner: tuple[int, int] | None
    overwrite: bool = True


class Transfer:
    """Pull one file from an HTTP(S) source into `final` with N streams; `run()` raises TransferFailed."""

    def __init__(self, server: DmtsServer, req: CopyRequest, state: TransferState):
        self.server = server
        self.req = req
        self.state = state
        self.cancelled = threading.Event()
        self.stop = threading.Event()  # tells the streams to end: set on cancel and on a failed stream
        self.cancel_reason = ""
        url = urllib.parse.urlsplit(req.source)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise TransferFailed(f"Source {req.source!r}: expected an http:// or https:// URL")
        self.url = url
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.part, self.journal_path = part_paths(req.final)
        port = url.port or (443 if url.scheme == "https" else 80)
        self.pool_key = ConnectionPool.key(url.scheme, url.hostname, port, server.source_tls())

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self.cancelled.set()
        self.stop.set()

    # -- connections -----------------------------------------------------------------------------
    def connect(self, timeout: float | None = None) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, reused): a kept-alive connection to the source from the server's pool, or a new one."""
        return self.server.pool.get(self.pool_key, timeout or self.server.io_timeout)

    def release(self, conn: http.client.HTTPConnection) -> None:
        """Give back a connection whose last response was read to its end."""
        self.server.pool.put(self.pool_key, conn)

    def head(self, want: str | None, *, timeout: float | None = None) -> http.client.HTTPResponse:
        headers = dict(self.req.forward)
        if want:
            headers["Want-Digest"] = want
        # A Digest of a large file takes the source a while to compute: `timeout` allows for it.
        conn, reused = self.connect(timeout)
        try:
            while True:
                try:
                    conn.request("HEAD", self.path, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    break
                except STALE_ERRORS:
                    conn.close()
                    if not reused:
                        raise
                    conn, reused = self.connect(timeout)  # the source had closed the idle connection
            self.release(conn)
            conn = None
            return resp
        except ssl.SSLError as e:
            raise TransferFailed(f"TLS with the source {self.url.netloc} failed: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise TransferFailed(f"source {self.url.netloc} unreachable: {e}", keep=True) from None
        finally:
            if conn is not None:
                conn.close()

    # -- the transfer ----------------------------------------------------------------------------
    def run(self) -> None:
        req = self.req
        want = "adler32" if req.expected is None else f"{req.expected[0]}, adler32;q=0.5"
        # A client that names the checksum it expects (the orchestrator, from the source's manifest)
        # got it from a source that has just computed it: the Digest then comes with the first HEAD,
        # which saves a request per file. Otherwise it may take the source a while (it reads the
        # whole file), so it is asked for in a second HEAD beside the data.
        early = req.expected is not None
        # With nothing to resume, the first request is a GET of the first FIRST_GET bytes: its answer
        # has what a HEAD would say (size in Content-Range, ETag, mode, mtime, Digest) and a small
        # file whole, so most files cost one request. A source that answers it otherwise gets a HEAD.
        first = None if self.part.exists() else self.first_get(want if early else None)
        if first is not None:
            resp, size = first[1], first[2]
        else:
            resp = self.head(want if early else None, timeout=self.server.digest_timeout if early else None)
            if resp.status != 200:
                raise TransferFailed(f"source answered HEAD with {resp.status} {resp.reason}")
            try:
                size = int(resp.getheader("Content-Length", ""))
            except ValueError:
                raise TransferFailed("source gave no Content-Length for the file") from None
        self.state.size = size
        etag = resp.getheader("ETag") or resp.getheader("Last-Modified") or ""
        mode, mtime, owner = req.mode, req.mtime, req.owner
        if mode is None and resp.getheader("X-Daaas-Mode"):
            mode = _parse_mode(resp.getheader("X-Daaas-Mode"), where="source X-Daaas-Mode")
        if mtime is None:
            if resp.getheader("X-Daaas-Mtime"):
                mtime = _parse_float(resp.getheader("X-Daaas-Mtime"), where="source X-Daaas-Mtime")
            elif resp.getheader("Last-Modified"):
                dt = email.utils.parsedate_to_datetime(resp.getheader("Last-Modified"))
                mtime = dt.timestamp() if dt else None
        if owner is None and resp.getheader("X-Daaas-Owner"):
            owner = _parse_owner(resp.getheader("X-Daaas-Owner"), where="source X-Daaas-Owner")

        digest_box: dict = {}

        def fetch_digest():
            try:
                r = self.head(want, timeout=self.server.digest_timeout)
                digest_box["value"] = ck.parse_digest(r.getheader("Digest") or "") if r.status == 200 else {}
            except (TransferFailed, ck.ChecksumError) as e:
                digest_box["error"] = str(e)

        digest_done: threading.Event | None = None
        if early:
            try:
                digest_box["value"] = ck.parse_digest(resp.getheader("Digest") or "")
            except ck.ChecksumError as e:
                digest_box["error"] = str(e)
        else:
            digest_done = self.server.threads.submit(fetch_digest)

        journal = Journal(self.journal_path, {"source": req.source, "size": size, "etag": etag})
        resumable = first is None and self.part.exists() and journal.load()
        try:
            fd = os.open(self.part, os.O_RDWR | os.O_CREAT | (0 if resumable else os.O_TRUNC), 0o600)
        except OSError as e:
            if first is not None:
                first[0].close()
            raise TransferFailed(f"cannot create {self.part.name} in {self.part.parent}: {e.strerror}") from None
        ok = False
        keep = False
        try:
            journal.open(fresh=not resumable, data_fd=fd, background=size > PIECE)
            if size > FIRST_GET and not resumable:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as e:
                    if e.errno == errno.ENOSPC:
                        raise TransferFailed(f"no space left on device for {size} bytes at {req.final.parent}"
                                             ) from None
                    os.ftruncate(fd, size)  # a file system without fallocate
            self.state.resumed_bytes = sum(e - s for s, e, _ in journal.pieces)
            preset, first = ((first[0], resp), None) if first is not None else (None, None)
            self.pull(fd, size, journal, preset)
            while digest_done is not None and not digest_done.wait(0.2) and not self.cancelled.is_set():
                pass
            if self.cancelled.is_set():
                raise TransferFailed(self.cancel_reason or "cancelled")
            if "error" in digest_box:
                # Never skip verification silently: the data is kept, a new COPY only verifies again.
                raise TransferFailed(f"could not get the source's Digest: {digest_box['error']}", keep=True)
            self.verify(fd, size, journal, digest_box)
            if self.server.fsync_on_complete:
                os.fsync(fd)
            if mode is not None:
                os.fchmod(fd, mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            ok = True
        except TransferFailed as e:
            keep = e.keep and not self.cancelled.is_set()
            raise
        finally:
            if first is not None:  # failed before its body was read
                first[0].close()
            journal.close()  # stops the background flusher before the data fd goes away
            if keep:
                try:
                    journal.flush()
                except OSError:
                    keep = False
            journal.close_file()
            os.close(fd)
            if ok:
                if not self.server.overwrite_ok(req):
                    _unlink(self.part)
                    _unlink(self.journal_path)
                    raise TransferFailed(f"{req.final.name} appeared during the transfer and Overwrite is F")
                os.replace(self.part, req.final)
                _unlink(self.journal_path)
            elif not keep:
                _unlink(self.part)
                _unlink(self.journal_path)

    def first_get(self, want: str | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, int] | None:
        """(connection, response, file size) of `GET Range: bytes=0-<FIRST_GET-1>`; None: ask with a HEAD.

        Only a 206 with a `Content-Range: bytes 0-<n>/<size>` is used; anything else (an empty file,
        a source without ranges, an error) is left to the HEAD, which reports it as before.
        """
        headers = {**dict(self.req.forward), "Range": f"bytes=0-{FIRST_GET - 1}"}
        if want:
            headers["Want-Digest"] = want
        conn, reused = self.connect(self.server.digest_timeout if want else None)
        try:
            while True:
                try:
                    conn.request("GET", self.path, headers=headers)
                    resp = conn.getresponse()
                    break
                except STALE_ERRORS:
                    conn.close()
                    if not reused:
                        raise
                    conn, reused = self.connect(self.server.digest_timeout if want else None)
        except (OSError, http.client.HTTPException):
            conn.close()
            return None  # the HEAD tries again and says what is wrong
        unit, _, rest = (resp.getheader("Content-Range") or "").partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        length = resp.getheader("Content-Length") or ""
        if (resp.status != 206 or unit != "bytes" or first != "0" or not last.isdigit() or not total.isdigit()
                or length != str(int(last) + 1) or int(last) >= int(total)):
            conn.close()  # not read to its end: not reusable
            return None
        if want:
            conn.sock.settimeout(self.server.io_timeout)  # the Digest is in: back to the data's timeout
        return conn, resp, int(total)

    def pull(self, fd: int, size: int, journal: Journal,
             preset: tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None = None) -> None:
        """Fetch the missing ranges; `preset` is the first GET's answer, whose body stream 0 reads first."""
        streams = self.req.streams
        self.state.stream_bytes = [0] * streams
        first_end = int(preset[1].getheader("Content-Length")) if preset else 0
        todo = missing_ranges(size, journal.pieces + ([(0, first_end, 0)] if preset else []))
        if not todo and not preset:
            return
        if not todo:
            streams = 1  # the first GET brought the whole file
        # Two chunks per stream: a stream that finishes its share early takes the other's second chunk,
        # so a slow stream does not hold the file back; one more range request per stream is cheap.
        chunk = min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(sum(e - s for s, e in todo) / (2 * streams))))
        chunks = [(a, min(e, a + chunk)) for s, e in todo for a in range(s, e, chunk)]
        queue = ChunkQueue(chunks, streams)
        errors: list[TransferFailed] = []
        stop = self.stop  # `cancel()` sets it too, so the streams end without anyone polling

        def worker(i: int) -> None:
            try:
                self.stream(i, fd, size, queue, journal, stop, preset if i == 0 else None)
            except TransferFailed as e:
                errors.append(e)
                stop.set()
            except Exception as e:  # a bug must fail the transfer, not hang it
                log.exception("stream %d", i)
                errors.append(TransferFailed(f"stream {i}: internal error {e!r}"))
                stop.set()

        if streams == 1:
            worker(0)  # in this thread: one thread start less per (small) file
        else:
            for done in [self.server.threads.submit(worker, i) for i in range(streams)]:
                done.wait()
        if self.cancelled.is_set():
            raise TransferFailed(self.cancel_reason or "cancelled")
        if errors:
            disk = [e for e in errors if not e.keep]
            raise (disk or errors)[0]
        if missing_ranges(size, journal.pieces):
            raise TransferFailed("internal error: ranges missing after all streams finished", keep=True)

    def stream(self, i: int, fd: int, size: int, queue: ChunkQueue, journal: Journal, stop: threading.Event,
               preset: tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None = None) -> None:
        buf = bytearray(READ_BLOCK)
        mv = memoryview(buf)
        conn, reused = None, False
        answer = None  # a response already received for the current range (the first GET's)
        if preset is not None:
            conn, answer = preset
            reused = True
        idle = preset is None  # False while a response body is unread: the connection is then not reusable
        forward = dict(self.req.forward)
        adler32 = ck.adler32
        counts = self.state.stream_bytes
        try:
            while not stop.is_set():
                if answer is not None:
                    start, end = 0, int(answer.getheader("Content-Length"))
                else:
                    got = queue.take(i)
                    if got is None:
                        return
                    start, end = got
                off, failures = start, 0
                while off < end and not stop.is_set():
                    piece_start, adler = off, 1
                    answered = False
                    try:
                        idle = False
                        if answer is not None:
                            resp, answer = answer, None
                        else:
                            if conn is None:
                                conn, reused = self.connect()
                            conn.request("GET", self.path, headers={**forward, "Range": f"bytes={off}-{end - 1}"})
                            resp = conn.getresponse()
                        answered = True
                        if resp.status != 206 and not (resp.status == 200 and off == 0 and end == size):
                            resp.read(65536)
                            if 400 <= resp.status < 500:
                                raise TransferFailed(f"source answered {resp.status} {resp.reason} to "
                                                     f"GET Range bytes={off}-{end - 1}")
                            raise http.client.HTTPException(f"source answered {resp.status} {resp.reason}")
                        while off < end:
                            if stop.is_set():
                                return
                            n = resp.readinto(mv[:min(READ_BLOCK, end - off)])
                            if not n:
                                raise ConnectionError(f"source closed the connection at byte {off}")
                            _pwrite_all(fd, mv[:n], off, self.req.final)
                            adler = adler32(mv[:n], adler)
                            off += n
                            counts[i] += n
                            if off - piece_start >= PIECE or off == end:
                                journal.add(piece_start, off, adler)
                                piece_start, adler = off, 1
                        idle = resp.isclosed()  # read to its end: the next range can go on this connection
                        reused = True
                        failures = 0
                    except ssl.SSLCertVerificationError as e:
                        raise TransferFailed(f"stream {i}: the source's certificate was rejected: "
                                             f"{e.verify_message}") from None
                    except (OSError, http.client.HTTPException) as e:
                        if off > piece_start:
                            journal.add(piece_start, off, adler)  # keep what did arrive
                        if conn is not None:
                            conn.close()
                            conn = None
                        if reused and not answered and isinstance(e, STALE_ERRORS):
                            continue  # the source had closed the kept-alive connection: not a failure
                        failures += 1
                        if failures > self.server.retries:
                            raise TransferFailed(f"stream {i}: {e} (gave up after {self.server.retries} retries)",
                                                 keep=True) from None
                        log.info("stream %d: %s; retrying from byte %d", i, e, off)
                        if stop.wait(min(2.0, 0.2 * 2 ** (failures - 1))):
                            return
        finally:
            if conn is not None:
                if idle:
                    self.release(conn)
                else:
                    conn.close()

    def verify(self, fd: int, size: int, journal: Journal, digest_box: dict) -> None:
        expected: dict[str, tuple[str, str]] = {}  # algo -> (hex, who said so)
        if self.req.expected:
            expected[self.req.expected[0]] = (self.req.expected[1], "the client (X-Daaas-Checksum)")
        for algo, value in digest_box.get("value", {}).items():
            if algo in expected and expected[algo][0] != value:
                raise TransferFailed(f"checksum mismatch: the source's Digest {algo}={value} differs from "
                                     f"{expected[algo][1]} {expected[algo][0]}")
            expected.setdefault(algo, (value, "the source's Digest"))
        if not expected:
            return  # nothing to compare with (a source without Digest, like nginx, and no manifest value)
        got: dict[str, str] = {}
        adler = combined_adler32(size, journal.pieces)
        if adler is not None:
            got["adler32"] = f"{adler:08x}"
        others = [a for a in expected if a not in got]
        if others:
            got.update(ck.file_checksums(Path(f"/proc/self/fd/{fd}"), others))
        for algo, (value, who) in expected.items():
            if got.get(algo) != value:
                raise TransferFailed(f"checksum mismatch: {algo} of the received file is {got.get(algo)}, "
                                     f"{who} says {value}")


def _pwrite_all(fd: int, data: memoryview, off: int, final: Path) -> None:
    while len(data):
        try:
            n = os.pwrite(fd, data, off)
        except OSError as e:
            where = f"writing {final.name} in {final.parent}"
            if e.errno == errno.ENOSPC:
                raise TransferFailed(f"no space left on device {where}") from None
            raise TransferFailed(f"{e.strerror} {where}") from None
        data, off = data[n:], off + n


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def _parse_mode(v: str, *, where: str) -> int:
    try:
        m = int(v.strip(), 8)
    except ValueError:
        raise ValueError(f"{where} {v!r}: expected octal permission bits such as 0644") from None
    if not 0 <= m <= 0o7777:
        raise ValueError(f"{where} {v!r}: out of range")
    return m


def _parse_float(v: str, *, where: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise ValueError(f"{where} {v!r}: expected seconds since the epoch") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{where} {v!r}: expected seconds since the epoch")
    return x


def _parse_owner(v: str, *, where: str) -> tuple[int, int]:
    uid, sep, gid = v.strip().partition(":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        raise ValueError(f"{where} {v!r}: expected uid:gid")
    return int(uid), int(gid)


class DmtsServer(DmsHTTPServer):
    """The DMTS: a `DmsHTTPServer` over the destination root, with its transfers' bookkeeping."""

    def __init__(self, address, *, root: Path, tls: TlsConfig | None, client_tls: ssl.SSLContext | None,
                 max_streams: int):
        super().__init__(address, DmtsHandler, root=root, tls=tls)
        self.client_tls = client_tls
        self.max_streams = max_streams
        self.marker_interval = 1.0
        self.retries = 4
        self.io_timeout = 30.0
        self.digest_timeout = 3600.0
        self.max_kept_statuses = 10000
        self.fsync_on_complete = True
        self.transfers: dict[str, TransferState] = {}
        # Kept-alive connections to sources (HEADs and range GETs of one file and of the next ones).
        self.pool = ConnectionPool(max_idle_per_key=max(32, 2 * max_streams))
        self._default_tls: ssl.SSLContext | None = None
        self.threads = ThreadCache()  # transfers' workers, digests and streams
        self._active: dict[Path, Transfer] = {}
        self._active_lock = threading.Lock()

    def source_tls(self) -> ssl.SSLContext:
        """The context for HTTPS sources: `client_tls`, else one default context (loading CAs is slow)."""
        if self.client_tls is not None:
            return self.client_tls
        if self._default_tls is None:
            self._default_tls = ssl.create_default_context()
        return self._default_tls

    def server_close(self) -> None:
        super().server_close()
        self.pool.close()

    def transfer_status(self, transfer_id: str | None = None):
        """One transfer's snapshot dict, or all of them (newest last) when no id is given."""
        if transfer_id is not None:
            st = self.transfers.get(transfer_id)
            return st.snapshot() if st else None
        return [s.snapshot() for s in list(self.transfers.values())]

    def cancel(self, transfer_id: str, reason: str = "cancelled by request") -> bool:
        """Cancel a running transfer (its part file is removed); False when no such transfer is running."""
        with self._active_lock:
            for t in self._active.values():
                if t.state.id == transfer_id:
                    t.cancel(reason)
                    return True
        return False

    def claim(self, final: Path, transfer: Transfer) -> bool:
        with self._active_lock:
            if final in self._active:
                return False
            self._active[final] = transfer
            return True

    def release(self, final: Path) -> None:
        with self._active_lock:
            self._active.pop(final, None)

    def overwrite_ok(self, req: CopyRequest) -> bool:
        return req.overwrite or not req.final.exists()


class DmtsHandler(FileHandler):
    """COPY (pull) plus enough WebDAV for davix and gfal2 on the destination namespace."""

    server: DmtsServer

    def do_OPTIONS(self):
        if not self.authorize():
            return
        self.send_text(200, "ok", {"Allow": "OPTIONS, GET, HEAD, PUT, DELETE, COPY, MKCOL, PROPFIND", "DAV": "1"})

    def do_POST(self):
        if not self.authorize():
            return
        self._drain_body()
        self.send_text(501, "POST (macaroon requests) is not supported by the daaas DMTS")

    def _drain_body(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            n -= len(chunk)

    def do_DELETE(self):
        if not self.authorize():
            return
        path, real = self.resolve_request()
        if real is None:
            return
        if real == self.server.root:
            self.send_text(403, "the destination root cannot be deleted")
            return
        part, journal = part_paths(real)
        _unlink(part)
        _unlink(journal)
        try:
            if real.is_dir() and not real.is_symlink():
                real.rmdir()
            else:
                real.unlink()
        except FileNotFoundError:
            self.send_text(404, f"{path}: no such file")
            return
        except OSError as e:
            self.send_text(409, f"{path}: cannot be deleted: {e.strerror}")
            return
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_MKCOL(self):
        if not self.authorize():
            return
        path, real = self.resolve_request()
        if real is None:
            return
        if real.exists():
            self.send_text(405, f"{path}: already exists")
            return
        if not real.parent.is_dir():
            self.send_text(409, f"{path}: the parent directory does not exist")
            return
        real.mkdir()
        self.send_text(201, "Created")

    def do_PROPFIND(self):
        if not self.authorize():
            return
        self._drain_body()
        path, real = self.resolve_request(must_exist=True)
        if real is None:
            return
        depth = self.headers.get("Depth", "1")
        items = [(path, real)]
        if real.is_dir() and depth != "0":
            base = path.rstrip("/")
            items += [(f"{base}/{p.name}", p) for p in sorted(real.iterdir())
                      if not p.name.endswith((PART_SUFFIX, JOURNAL_SUFFIX))]
        parts = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
        for href, p in items:
            try:
                st = os.stat(p)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            parts.append(
                f"<D:response><D:href>{escape(urllib.parse.quote(href))}</D:href><D:propstat><D:prop>"
                f"<D:displayname>{escape(p.name)}</D:displayname>"
                f"<D:getlastmodified>{email.utils.formatdate(st.st_mtime, usegmt=True)}</D:getlastmodified>"
                + ("<D:resourcetype><D:collection/></D:resourcetype>" if is_dir else
                   f"<D:resourcetype/><D:getcontentlength>{st.st_size}</D:getcontentlength>")
                + f"<D:getetag>\"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}\"</D:getetag>"
                f"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>")
        parts.append("</D:multistatus>\n")
        data = "".join(parts).encode()
        self.send_response(207)
        self.send_header("Content-Type", 'application/xml; charset="utf-8"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        """A streamed upload (gfal2's last fallback): written under the part name, renamed when complete."""
        if not self.authorize():
            return
        path, real = self.resolve_request()
        if real is None:
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.send_text(411, "PUT needs a Content-Length")
            return
        if real.is_dir() or not real.parent.is_dir():
            self.send_text(409, f"{path}: is a directory or its parent does not exist")
            return
        part, _ = part_paths(real)
        n = int(length)
        try:
            with open(part, "wb") as f:
                while n > 0:
                    chunk = self.rfile.read(min(n, READ_BLOCK))
                    if not chunk:
                        raise ConnectionError("client closed the connection during PUT")
                    f.write(chunk)
                    n -= len(chunk)
            os.replace(part, real)
        except OSError as e:
            _unlink(part)
            if isinstance(e, ConnectionError):
                self.close_connection = True
                return
            self.send_text(507 if e.errno == errno.ENOSPC else 500, f"{path}: {e.strerror or e}")
            return
        self.send_text(201, "Created")

    # -- COPY ------------------------------------------------------------------------------------
    def do_COPY(self):
        if not self.authorize():
            return
        h = self.headers
        source, destination = h.get("Source"), h.get("Destination")
        if source and destination:
            self.send_text(400, "both Source and Destination given: send Source (pull) only")
            return
        if not source and not destination:
            self.send_text(400, "COPY needs a Source header (pull mode)")
            return
        if destination:
            self.send_text(501, "push mode (COPY with Destination) is not supported; use pull (Source)")
            return
        path, _ = self.request_path()
        try:
            final = resolve_under(self.server.root, path)
        except PathError as e:
            self.send_text(e.status, str(e))
            return
        if final == self.server.root or path.endswith("/") or final.is_dir():
            self.send_text(400, f"{path}: the destination must be a file path, not a directory")
            return
        try:
            req = self.parse_copy(source, final)
        except ValueError as e:
            self.send_text(400, str(e))
            return
        overwrite = (h.get("Overwrite") or "T").strip().upper()
        if overwrite not in ("T", "F"):
            self.send_text(400, f"Overwrite {h.get('Overwrite')!r}: expected T or F")
            return
        req = dataclasses.replace(req, overwrite=overwrite == "T")
        if overwrite == "F" and final.exists():
            self.send_text(412, f"{path}: exists and Overwrite is F")
            return
        try:
            if not final.parent.is_dir():
                final.parent.mkdir(parents=True, exist_ok=True)
                # mkdir followed the real path, but a racing symlink could still move it: check again.
                resolve_under(self.server.root, path)
        except (OSError, PathError) as e:
            self.send_text(409, f"{path}: cannot create its directory: {e}")
            return
        state = TransferState(id=uuid.uuid4().hex, source=source, destination=path, streams=req.streams)
        try:
            transfer = Transfer(self.server, req, state)
        except TransferFailed as e:
            self.send_text(400, str(e))
            return
        if not self.server.claim(final, transfer):
            self.send_text(409, f"{path}: another transfer to this destination is in progress")
            return
        try:
            self.run_copy(transfer, state)
        finally:
            self.server.release(final)

    def parse_copy(self, source: str, final: Path) -> CopyRequest:
        h = self.headers
        raw = h.get("X-Number-Of-Streams") or "1"
        if not raw.strip().isdigit() or not 1 <= int(raw) <= self.server.max_streams:
            raise ValueError(f"X-Number-Of-Streams {raw!r}: expected an integer from 1 to {self.server.max_streams}")
        forward = []
        for k, v in h.items():
            if k.lower().startswith("transferheader") and len(k) > len("TransferHeader"):
                forward.append((k[len("TransferHeader"):], v))
        expected = None
        if h.get("X-Daaas-Checksum"):
            try:
                expected = ck.parse_checksum(h["X-Daaas-Checksum"], where="X-Daaas-Checksum")
            except ck.ChecksumError as e:
                raise ValueError(str(e)) from None
        mode = _parse_mode(h["X-Daaas-Mode"], where="X-Daaas-Mode") if h.get("X-Daaas-Mode") else None
        mtime = _parse_float(h["X-Daaas-Mtime"], where="X-Daaas-Mtime") if h.get("X-Daaas-Mtime") else None
        owner = _parse_owner(h["X-Daaas-Owner"], where="X-Daaas-Owner") if h.get("X-Daaas-Owner") else None
        return CopyRequest(source=source, final=final, streams=int(raw), forward=tuple(forward),
                           expected=expected, mode=mode, mtime=mtime, owner=owner)

    def write_chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def client_gone(self) -> bool:
        """True when the client closed its side (nothing else should arrive during a COPY)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.settimeout(0.2)
            try:
                return sock.recv(1) == b""
            finally:
                sock.settimeout(None)
        except TimeoutError:
            return False
        except (OSError, ValueError):
            return True

    def marker(self, state: TransferState) -> str:
        now = int(time.time())
        k = max(1, len(state.stream_bytes))
        counts = state.stream_bytes or [0]
        resumed = state.resumed_bytes
        return "".join(
            f"Perf Marker\n\tTimestamp: {now}\n\tStripe Index: {i}\n"
            f"\tStripe Bytes Transferred: {counts[i] + (resumed if i == 0 else 0)}\n"
            f"\tTotal Stripe Count: {k}\nEnd\n" for i in range(len(counts)))

    def run_copy(self, transfer: Transfer, state: TransferState) -> None:
        transfers = self.server.transfers
        transfers[state.id] = state
        while len(transfers) > self.server.max_kept_statuses:  # keep the newest statuses only
            oldest = next(iter(transfers))
            if transfers[oldest].state == "running":
                break
            transfers.pop(oldest, None)
        result: dict = {}

        def work():
            try:
                transfer.run()
                state.state = "succeeded"
            except TransferFailed as e:
                result["error"] = str(e)
                state.state = "cancelled" if transfer.cancelled.is_set() else "failed"
                state.error = str(e)
            except Exception as e:
                log.exception("transfer %s", state.id)
                result["error"] = f"internal error: {e!r}"
                state.state, state.error = "failed", result["error"]
            finally:
                state.finished = time.time()

        self.send_response(202)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Daaas-Transfer-Id", state.id)
        self.end_headers()
        done = self.server.threads.submit(work)
        last = time.monotonic()
        try:
            while not done.is_set():
                if done.wait(0.2):
                    break
                if self.client_gone():
                    raise ConnectionError("client disconnected")
                if time.monotonic() - last >= self.server.marker_interval:
                    self.write_chunk(self.marker(state))
                    last = time.monotonic()
            line = "success: Created\n" if "error" not in result else f"failure: {result['error']}\n"
            last_chunk = (self.marker(state) + line).encode()
            # The last marker, the final line and the end of the body in one write (one TLS record).
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last_chunk), last_chunk))
        except OSError:
            transfer.cancel("the client disconnected")
            done.wait()
            self.close_connection = True
            log.info("transfer %s cancelled: client disconnected", state.id)


def make_dmts_server(root: Path, *, host: str = "127.0.0.1", port: int = 0, tls: TlsConfig | None,
                     client_tls: ssl.SSLContext | None = None, max_streams: int = 16) -> DmtsServer:
    """A DMTS bound to (host, port) writing under `root`; `client_tls` is used to pull from HTTPS sources."""
    if not 1 <= max_streams <= 256:
        raise ValueError(f"max_streams {max_streams}: expected 1..256")
    return DmtsServer((host, port), root=root, tls=tls, client_tls=client_tls, max_streams=max_streams)
