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
"""
from __future__ import annotations

import http.client
import json
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
                 timeout: float = DEFAULT_TIMEOUT):
        _split_url(src_url, field_name="source")
        self.dst = _split_url(dst_url, field_name="destination")
        if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
            raise ValueError(f"streams: must be a positive integer, got {streams!r}")
        self.src_url, self.dst_url = src_url, dst_url
        self.streams, self.tls, self.checksum = streams, tls, checksum
        self.on_progress, self.overwrite = on_progress, overwrite
        self.transfer_headers = dict(transfer_headers or {})
        self.timeout = timeout
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

    def run(self) -> CopyResult:
        t0 = time.monotonic()
        conn = _connection(self.dst, self.tls, self.timeout)
        with self._lock:
            self._conn = conn
        if self._cancelled.is_set():
            raise CopyCancelled("cancelled before it started", reason="cancelled")
        stripes: dict[int, int] = {}
        markers = 0
        try:
            try:
                conn.request("COPY", _target(self.dst), headers=self._headers())
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                if self._cancelled.is_set():
                    raise CopyCancelled("cancelled", reason="cancelled") from None
                raise CopyError(f"{self.dst_url}: could not send COPY: {e}") from None
            if resp.status not in (201, 202):
                body = resp.read(4096).decode("utf-8", "replace").strip()
                raise CopyError(f"{self.dst_url}: destination answered {resp.status} {resp.reason}: {body}",
                                status=resp.status, reason=body or resp.reason)
            if resp.status == 201:  # finished synchronously, without markers
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
            except (OSError, http.client.HTTPException, ValueError) as e:
                if self._cancelled.is_set():
                    raise CopyCancelled("cancelled", reason="cancelled") from None
                raise CopyError(f"{self.dst_url}: connection to the destination broke: {e}") from None
            if self._cancelled.is_set():
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
