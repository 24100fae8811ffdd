"""A client of HTTP third-party copy (WLCG HTTP-TPC, pull mode) and of the source's manifests.

`copy()` asks a destination (a DMTS, or any HTTP-TPC endpoint) to pull one file from a source:
it sends `COPY <dst>` with `Source: <src>`, then reads the 202 answer's chunked body, a series of
perf-marker blocks and one final line:

    Perf Marker
    \tTimestamp: 1700000000
    \tStripe Index: 0
    \tStripe Bytes Transferred: 1048576
    \tTotal Stripe Count: 4
    End
    ...
    success: Created            (or  failure: <reason>)

Each marker reports the bytes one stripe (stream) has moved so far; their sum is the progress.
A `TpcCopy` can be cancelled from another thread: it shuts its socket down, and the destination,
seeing its client gone, cancels the transfer and removes the partial file.

`fetch_manifest()` reads the source's JSON manifest of a directory into `FileEntry`s.

`ConnectionPool` keeps idle HTTP/1.1 keep-alive connections per (scheme, host, port, TLS context), so
that many small files do not each pay a TCP and TLS handshake (the DMTS uses one towards its sources,
the orchestrator one towards the DMTS).
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from core.transfer_order import FileEntry

DEFAULT_TIMEOUT = 60.0  # seconds without a byte from the destination; markers come every <= 5 s


class CopyError(Exception):
    """A third-party copy failed: the destination refused it, reported `failure: ...`, or went silent.

    `status` is the HTTP status when the destination answered one (else None); `reason` the text.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason or message


class CopyCancelled(CopyError):
    """The copy was cancelled by `TpcCopy.cancel()` before the destination said success."""


class ManifestError(Exception):
    """The source's manifest could not be fetched or read; `status` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Progress:
    """What the destination has reported so far: bytes per stripe and their sum."""

    bytes_done: int
    stripes: Mapping[int, int] = field(default_factory=dict)
    stripe_count: int = 0
    timestamp: float = 0.0


@dataclass(frozen=True)
class CopyResult:
    """A finished copy: the destination's final line, bytes moved and the wall time it took."""

    final: str
    bytes_done: int
    seconds: float
    markers: int


def _split_url(url: str, *, field_name: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field_name}: {url!r} is not an http(s) URL")
    return parts


def _connection(parts: urllib.parse.SplitResult, tls: ssl.SSLContext | None,
                timeout: float) -> http.client.HTTPConnection:
    if parts.scheme == "https":
        if tls is None:
            raise ValueError(f"{parts.geturl()}: an https URL needs a TLS context")
        return http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=tls, timeout=timeout)
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)


class ConnectionPool:
    """Idle keep-alive `http.client` connections per (scheme, host, port, TLS context); thread-safe.

    `get()` hands out an idle connection (checked not to have been closed by the server meanwhile) or
    a new one; `put()` takes back a connection whose last response was read to its end. A connection
    that failed, was cancelled or whose response said `Connection: close` is simply not put back.
    Idle connections older than `max_idle_age` seconds are closed (the server may have dropped them).
    """

    def __init__(self, *, max_idle_per_key: int = 32, max_idle_age: float = 30.0):
        self.max_idle_per_key = max_idle_per_key
        self.max_idle_age = max_idle_age
        self._idle: dict[tuple, list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()
        self.created = 0  # connections opened, for tests and benchmarks
        self.reused = 0

    @staticmethod
    def key(scheme: str, host: str, port: int, tls: ssl.SSLContext | None) -> tuple:
        return (scheme, host, port, tls if scheme == "https" else None)

    def get(self, key: tuple, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, reused): an idle connection for `key` if a live one is left, else a new one."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                item = idle.pop() if idle else None
            if item is None:
                break
            since, conn = item
            if now - since <= self.max_idle_age and _idle_alive(conn):
                conn.timeout = timeout
                conn.sock.settimeout(timeout)
                with self._lock:
                    self.reused += 1
                return conn, True
            conn.close()
        scheme, host, port, tls = key
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, context=tls, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        with self._lock:
            self.created += 1
        return conn, False

    def put(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        """Keep `conn` for the next `get()`; only call it once its last response has been read to the end."""
        if conn.sock is None:  # the response asked to close, or the connection failed
            conn.close()
            return
        now = time.monotonic()
        stale = []
        with self._lock:
            idle = self._idle.setdefault(key, [])
            idle.append((now, conn))
            if len(idle) > self.max_idle_per_key:
                stale.append(idle.pop(0)[1])
            for items in self._idle.values():  # close what nobody asked for in a while
                while items and now - items[0][0] > self.max_idle_age:
                    stale.append(items.pop(0)[1])
        for c in stale:
            c.close()

    def close(self) -> None:
        with self._lock:
            items = [c for idle in self._idle.values() for _, c in idle]
            self._idle.clear()
        for c in items:
            c.close()


def _idle_alive(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection has nothing to read; readable means the server closed it (or misbehaved)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable
    except (OSError, ValueError):
        return False


# A reused connection may have been closed by the server just as the request went out: that
# request is sent again once on a new connection (GET and HEAD are idempotent; COPY had not started).
STALE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                ssl.SSLEOFError, ssl.SSLZeroReturnError)


def _target(parts: urllib.parse.SplitResult) -> str:
    path = parts.path or "/"
    return path + ("?" + parts.query if parts.query else "")


def parse_markers(lines: Iterable[str]) -> Iterable[tuple[str, object]]:
    """Turn the lines of a TPC answer into ("marker", dict) and ("final", line) items.

    Kept separate from the socket so it can be tested on text: a marker is the block between
    `Perf Marker` and `End`; `success:`/`failure:` lines are final; anything else is ignored
    (some servers send blank keep-alive lines).
    """
    block: dict[str, str] | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        if stripped == "Perf Marker":
            block = {}
        elif stripped == "End" and block is not None:
            yield "marker", block
            block = None
        elif block is not None and ":" in stripped:
            key, _, value = stripped.partition(":")
            block[key.strip()] = value.strip()
        elif stripped.startswith(("success:", "failure:", "aborted:")):
            yield "final", stripped


class TpcCopy:
    """One pull copy; `run()` blocks until the destination's final line, `cancel()` may be called from elsewhere."""

    def __init__(self, src_url: str, dst_url: str, *, streams: int = 1, tls: ssl.SSLContext | None = None,
                 checksum: str | None = None, on_progress: Callable[[Progress], None] | None = None,
                 overwrite: bool = True, transfer_headers: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, pool: ConnectionPool | None = None):
        _split_url(src_url, field_name="source")
        self.dst = _split_url(dst_url, field_name="destination")
        if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
            raise ValueError(f"streams: must be a positive integer, got {streams!r}")
        self.src_url, self.dst_url = src_url, dst_url
        self.streams, self.tls, self.checksum = streams, tls, checksum
        self.on_progress, self.overwrite = on_progress, overwrite
        self.transfer_headers = dict(transfer_headers or {})
        self.timeout = timeout
        self.pool = pool  # keep-alive connections to the destination, shared between copies
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop waiting and drop the connection, which tells the destination to abandon the copy."""
        self._cancelled.set()
        with self._lock:
            conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _headers(self) -> dict[str, str]:
        h = {"Source": self.src_url, "X-Number-Of-Streams": str(self.streams),
             "Overwrite": "T" if self.overwrite else "F", "Credential": "none"}
        if self.checksum:
            h["X-Daaas-Checksum"] = self.checksum
        for name, value in self.transfer_headers.items():
            h[f"TransferHeader{name}"] = value
        return h

    def _connect(self) -> tuple[http.client.HTTPConnection, bool]:
        if self.pool is None:
            return _connection(self.dst, self.tls, self.timeout), False
        if self.dst.scheme == "https" and self.tls is None:
            raise ValueError(f"{self.dst_url}: an https URL needs a TLS context")
        return self.pool.get(self._pool_key(), self.timeout)

    def _pool_key(self) -> tuple:
        return ConnectionPool.key(self.dst.scheme, self.dst.hostname, self.dst.port or
                                  (443 if self.dst.scheme == "https" else 80), self.tls)

    def _send(self) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the COPY; a reused connection the destination had closed meanwhile is replaced once."""
        conn, reused = self._connect()
        while True:
            with self._lock:
                self._conn = conn
            if self._cancelled.is_set():
                conn.close()
                raise CopyCancelled("cancelled before it started", reason="cancelled")
            try:
                conn.request("COPY", _target(self.dst), headers=self._headers())
                return conn, conn.getresponse()
            except STALE_ERRORS as e:
                conn.close()
                if not reused or self._cancelled.is_set():
                    if self._cancelled.is_set():
                        raise CopyCancelled("cancelled", reason="cancelled") from None
                    raise CopyError(f"{self.dst_url}: could not send COPY: {e}") from None
                conn, reused = _connection(self.dst, self.tls, self.timeout), False
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if self._cancelled.is_set():
                    raise CopyCancelled("cancelled", reason="cancelled") from None
                raise CopyError(f"{self.dst_url}: could not send COPY: {e}") from None

    def run(self) -> CopyResult:
        t0 = time.monotonic()
        conn = None
        stripes: dict[int, int] = {}
        markers = 0
        reusable = False  # the answer was read to its end: the connection can serve the next copy
        try:
            conn, resp = self._send()
            if resp.status not in (201, 202):
                body = resp.read(4096).decode("utf-8", "replace").strip()
                raise CopyError(f"{self.dst_url}: destination answered {resp.status} {resp.reason}: {body}",
                                status=resp.status, reason=body or resp.reason)
            if resp.status == 201:  # finished synchronously, without markers
                resp.read()
                reusable = True
                return CopyResult("success: Created", 0, time.monotonic() - t0, 0)
            final = None
            try:
                for kind, item in parse_markers(_lines(resp)):
                    if kind == "marker":
                        markers += 1
                        idx = int(item.get("Stripe Index", "0") or 0)  # type: ignore[union-attr]
                        stripes[idx] = int(item.get("Stripe Bytes Transferred", "0") or 0)  # type: ignore[union-attr]
                        if self.on_progress:
                            self.on_progress(Progress(
                                bytes_done=sum(stripes.values()), stripes=dict(stripes),
                                stripe_count=int(item.get("Total Stripe Count", "0") or 0),  # type: ignore[union-attr]
                                timestamp=float(item.get("Timestamp", "0") or 0)))  # type: ignore[union-attr]
                    else:
                        final = str(item)
                        break
                if final is not None and self.pool is not None:
                    resp.read()  # the end of the chunked body, so that the connection can be reused
                    reusable = resp.isclosed()
            except (OSError, http.client.HTTPException, ValueError) as e:
                if self._cancelled.is_set():
                    raise CopyCancelled("cancelled", reason="cancelled") from None
                raise CopyError(f"{self.dst_url}: connection to the destination broke: {e}") from None
            if self._cancelled.is_set():
                reusable = False
                raise CopyCancelled("cancelled", reason="cancelled")
            if final is None:
                raise CopyError(f"{self.dst_url}: the destination ended its answer without a success or failure line")
            if not final.startswith("success:"):
                reason = final.partition(":")[2].strip()
                raise CopyError(f"{self.dst_url}: {final}", status=resp.status, reason=reason)
            return CopyResult(final, sum(stripes.values()), time.monotonic() - t0, markers)
        finally:
            with self._lock:
                self._conn = None
                reusable = reusable and not self._cancelled.is_set()
            if conn is not None:
                if reusable and self.pool is not None:
                    self.pool.put(self._pool_key(), conn)
                else:
                    conn.close()


def _lines(resp: http.client.HTTPResponse) -> Iterable[str]:
    while True:
        line = resp.readline(65536)
        if not line:
            return
        yield line.decode("utf-8", "replace")


def copy(src_url: str, dst_url: str, *, streams: int = 1, tls: ssl.SSLContext | None = None,
         checksum: str | None = None, on_progress: Callable[[Progress], None] | None = None,
         overwrite: bool = True, timeout: float = DEFAULT_TIMEOUT) -> CopyResult:
    """Ask the destination `dst_url` to pull `src_url` with `streams` parallel streams; block until done.

    `checksum` ("adler32:xxxxxxxx", ...) is passed to the destination to verify. Raises `CopyError`
    with the destination's reason on any failure.
    """
    return TpcCopy(src_url, dst_url, streams=streams, tls=tls, checksum=checksum, on_progress=on_progress,
                   overwrite=overwrite, timeout=timeout).run()


def head(url: str, *, tls: ssl.SSLContext | None = None, want_digest: str | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str]]:
    """HEAD a URL; returns (status, headers with lower-case names)."""
    parts = _split_url(url, field_name="url")
    conn = _connection(parts, tls, timeout)
    try:
        headers = {"Want-Digest": want_digest} if want_digest else {}
        conn.request("HEAD", _target(parts), headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def get_json(url: str, *, tls: ssl.SSLContext | None = None, timeout: float = 60.0) -> object:
    """GET a URL and parse its JSON body; a non-200 answer or bad JSON is a `ManifestError`."""
    parts = _split_url(url, field_name="url")
    conn = _connection(parts, tls, timeout)
    try:
        try:
            conn.request("GET", _target(parts), headers={"Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise ManifestError(f"{url}: {e}") from None
        if resp.status != 200:
            raise ManifestError(f"{url}: answered {resp.status} {resp.reason}: "
                                f"{body[:300].decode('utf-8', 'replace').strip()}", status=resp.status)
        try:
            return json.loads(body)
        except ValueError as e:
            raise ManifestError(f"{url}: not JSON ({e})") from None
    finally:
        conn.close()


def join_url(base: str, path: str) -> str:
    """`base` + '/' + the URL-quoted relative `path` (a '/'-separated path under the base)."""
    return base.rstrip("/") + "/" + urllib.parse.quote(path.strip("/"))


def manifest_entries(raw: object, *, where: str) -> list[FileEntry]:
    """The files of a source manifest (`{"files": [...]}` or a bare list) as `FileEntry`s.

    Entries that are directories (`"type": "dir"`) are skipped; the caller recurses.
    """
    items = raw.get("files", raw.get("entries")) if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise ManifestError(f"{where}: manifest has no list of files")
    out = []
    for i, e in enumerate(items):
        if not isinstance(e, dict) or "path" not in e:
            raise ManifestError(f"{where}: entry {i} has no 'path'")
        if e.get("type", "file") not in ("file", "f", "regular"):
            continue
        try:
            out.append(FileEntry(path=str(e["path"]).strip("/"), size=int(e.get("size", 0)),
                                 mode=int(e.get("mode", 0o644)), mtime=float(e.get("mtime", 0.0)),
                                 checksum=e.get("checksum")))
        except (TypeError, ValueError) as err:
            raise ManifestError(f"{where}: entry {i} ({e.get('path')!r}): {err}") from None
    return out


def manifest_url(source: str, directory: str, *, recursive: bool = True) -> str:
    """Where `dms.source` serves a directory's manifest: `<dir>/?manifest`, `&recursive=1` for the whole tree."""
    d = directory.strip("/")
    return ((join_url(source, d) + "/" if d else source.rstrip("/") + "/") + "?manifest"
            + ("&recursive=1" if recursive else ""))


def fetch_manifest(source: str, directory: str, *, tls: ssl.SSLContext | None, recursive: bool = True,
                   fetch: Callable[[str], object] | None = None) -> list[FileEntry]:
    """The files in `directory` of the source (and below it when `recursive`), from its JSON manifest."""
    get = fetch or (lambda url: get_json(url, tls=tls))
    url = manifest_url(source, directory, recursive=recursive)
    raw = get(url)
    entries = manifest_entries(raw, where=url)
    d = directory.strip("/")
    # Manifests may give paths relative to the directory or to the source root; normalise to the root.
    if d and entries and not all(e.path == d or e.path.startswith(d + "/") for e in entries):
        entries = [FileEntry(path=f"{d}/{e.path}", size=e.size, mode=e.mode, mtime=e.mtime, checksum=e.checksum)
                   for e in entries]
    return entries
