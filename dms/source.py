"""The archive-side source endpoint: HTTPS GET/HEAD with Range and Digest over a plain directory tree.

Requests:
- `GET /path/file` (with `Range: bytes=a-b`, `bytes=a-` or `bytes=-n`): 200, or 206 with
  `Content-Range`; 416 with `Content-Range: bytes */size` when the range starts past the end;
  400 for a malformed or multi-range header.
- `HEAD /path/file` with `Want-Digest: adler32, sha-256;q=0.5, md5` -> `Digest: adler32=<8 hex>`
  (RFC 3230; md5 and sha-256 in base64). Every file response also carries `X-Daaas-Mode` (octal
  permission bits), `X-Daaas-Mtime` (float seconds), `X-Daaas-Owner` (uid:gid), `ETag` and
  `Last-Modified`.
- `GET /path/dir/?manifest` or `GET /.manifest/path/dir` (add `recursive=1` for the whole tree):
  the directory's JSON manifest (see `dms.manifest`).

Every server here is a `DmsHTTPServer`: threaded, one thread per connection, TLS by default,
plain sockets only when `tls` is None. Any client certificate passes the TLS handshake; every request
is then checked by `dms.peer` before anything else (chain to the daaas CA, validity, its CRL,
`allowed_subjects` matched against the CN) and refused with 401 (no certificate) or 403 naming the
reason. File bodies go out with
`socket.sendfile` on plain sockets and in 1 MiB writes on TLS.
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import socket
import ssl
import stat
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dms import checksum as ck
from dms import manifest as mf
from dms.paths import PathError, resolve_under
from dms.peer import peer_certificate
from dms.tls import TlsConfig, config_server_context, peer_verifier

log = logging.getLogger("dms.source")
SEND_BLOCK = 1024 * 1024
LINGER_BYTES = 8 * 1024 * 1024  # request body read and dropped after a refusal, so the client sees the answer


class RangeError(ValueError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def parse_range(header: str, size: int) -> tuple[int, int]:
    """(start, end exclusive) of a single `Range: bytes=...` header for a file of `size` bytes."""
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise RangeError(f"Range {header!r}: expected bytes=<start>-<end>", 400)
    if "," in spec:
        raise RangeError(f"Range {header!r}: multiple ranges are not supported", 400)
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()) or (not first and not last):
        raise RangeError(f"Range {header!r}: malformed", 400)
    if not first:  # suffix range: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeError(f"Range {header!r}: unsatisfiable for a file of {size} bytes", 416)
        return max(0, size - n), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        raise RangeError(f"Range {header!r}: the end is before the start", 400)
    if start >= size:
        raise RangeError(f"Range {header!r}: starts at or past the end of a file of {size} bytes", 416)
    return start, min(end, size)


class DmsHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP(S) server over a root directory; TLS handshakes happen in the connection's thread."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address, handler, *, root: Path, tls: TlsConfig | None):
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise ValueError(f"root {root}: not a directory")
        self.tls = tls
        # Any client certificate passes the handshake; `peers` judges it per request, in HTTP, with a reason.
        self.context = config_server_context(tls, http_enforced=True) if tls is not None else None
        self.peers = peer_verifier(tls) if tls is not None else None
        self.checksums = ck.ChecksumCache()
        self.stats_lock = threading.Lock()
        self.bytes_sent = 0
        self.ranges_served: list[tuple[str, int, int]] = []  # (path, start, end) of bodies started, for tests
        self.rejections: list[str] = []  # handshake failures and 4xx reasons, newest last (bounded)
        super().__init__(address, handler)

    def note_range(self, path: str, start: int, end: int) -> None:
        """A body is about to be sent (recorded first, so a client that has the data sees the record)."""
        with self.stats_lock:
            self.ranges_served.append((path, start, end))
            del self.ranges_served[:-10000]

    def note_sent(self, n: int) -> None:
        with self.stats_lock:
            self.bytes_sent += n

    def note_rejection(self, text: str) -> None:
        log.warning("%s", text)
        with self.stats_lock:
            self.rejections.append(text)
            del self.rejections[:-1000]

    def handle_error(self, request, client_address):
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            log.info("connection from %s ended: %s", client_address[0], exc)  # a client that left: not our bug
            return
        log.exception("error serving %s", client_address[0])

    def finish_request(self, request, client_address):
        if self.context is not None:
            try:
                request.settimeout(30)  # a client that never finishes its handshake must not hold a thread
                request = self.context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as e:
                reason = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
                self.note_rejection(f"TLS handshake from {client_address[0]}:{client_address[1]} rejected: {reason}")
                return
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            if request is not None and self.context is not None:
                try:
                    request.close()
                except OSError:
                    pass


class FileHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files with Range and Digest, and directory manifests, under `server.root`."""

    protocol_version = "HTTP/1.1"
    server_version = "daaas-dms/0.1"
    server: DmsHTTPServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), format % args)

    def setup(self):
        super().setup()
        try:
            # Headers and body are separate writes: without this, Nagle + delayed ACK stall small replies.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- helpers ---------------------------------------------------------------------------------
    def send_text(self, status: int, text: str, headers: dict[str, str] | None = None, *,
                  body: bool = True) -> None:
        data = (text.rstrip("\n") + "\n").encode()
        if status >= 400:
            self.server.note_rejection(f"{self.command} {self.path}: {status} {text}")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(data)

    def authorize(self, *, linger: bool = True) -> bool:
        """Checks the client certificate (TLS only) before anything else; answers 4xx and returns False when refused.

        The reason is in the body and, for HEAD (no body), in `X-Daaas-Error`. The connection is
        closed after a refusal, once the request body (if any, up to `LINGER_BYTES`) has been read
        and dropped: a client still sending it would otherwise get a reset instead of the answer.
        """
        if self.server.peers is None:
            return True
        verdict = self.server.peers.verify(peer_certificate(self.connection))
        if verdict.ok:
            return True
        self.close_connection = True
        self.send_text(verdict.status, verdict.reason, {"X-Daaas-Error": verdict.reason, "Connection": "close"})
        if linger:
            self.discard_body(LINGER_BYTES)
        return False

    def handle_expect_100(self):
        # Refuse before "100 Continue": a client that waits for it then never sends the body.
        if not self.authorize(linger=False):
            return False
        return super().handle_expect_100()

    def discard_body(self, limit: int) -> None:
        """Read and drop up to `limit` bytes of the request body (Content-Length), waiting at most 5 s for each read."""
        try:
            n = min(int(self.headers.get("Content-Length") or 0), limit)
        except ValueError:
            return
        self.connection.settimeout(5)
        try:
            while n > 0:
                chunk = self.rfile.read(min(n, 65536))
                if not chunk:
                    break
                n -= len(chunk)
        except OSError:
            pass

    def request_path(self) -> tuple[str, dict[str, list[str]]]:
        # Not urlsplit: it would read '//etc/passwd' as a host name and hide the absolute path.
        # The request line as sent: http.server collapses a leading '//' in self.path, which would
        # quietly turn an absolute path into a relative one instead of refusing it.
        words = self.requestline.split()
        raw, _, query = (words[1] if len(words) >= 2 else self.path).partition("?")
        if raw.startswith(("http://", "https://")):
            raw = "/" + raw.split("/", 3)[3] if raw.count("/") >= 3 else "/"
        return urllib.parse.unquote(raw), urllib.parse.parse_qs(query, keep_blank_values=True)

    def resolve(self, path: str, *, must_exist: bool = False, is_dir: bool = False) -> Path | None:
        """The real path under the root, or None once a 4xx has been sent (bad path; missing or not a
        directory when `must_exist` or `is_dir` ask for it)."""
        try:
            real = resolve_under(self.server.root, path)
        except PathError as e:
            self.send_text(e.status, str(e))
            return None
        if is_dir and not real.is_dir():
            self.send_text(404, f"{path}: not a directory (manifests are per directory)")
            return None
        if must_exist and not real.exists():
            self.send_text(404, f"{path}: no such file or directory")
            return None
        return real

    def resolve_request(self, *, must_exist: bool = False) -> tuple[str, Path | None]:
        """(request path, its real path or None once a 4xx has been sent): see `resolve`."""
        path, _ = self.request_path()
        return path, self.resolve(path, must_exist=must_exist)

    def file_headers(self, real: Path, st: os.stat_result) -> dict[str, str]:
        return {
            "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
            "ETag": f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"',
            "X-Daaas-Mode": f"{stat.S_IMODE(st.st_mode):04o}",
            "X-Daaas-Mtime": repr(st.st_mtime),
            "X-Daaas-Owner": f"{st.st_uid}:{st.st_gid}",
        }

    def digest_header(self, real: Path, st: os.stat_result) -> str | None:
        want = self.headers.get("Want-Digest")
        if not want:
            return None
        algos = ck.parse_want_digest(want)
        if not algos:
            return None
        return ck.format_digest({a: self.server.checksums.get(real, a, st) for a in algos})

    # -- methods ---------------------------------------------------------------------------------
    def do_HEAD(self):
        self.serve_path(body=False)

    def do_GET(self):
        self.serve_path(body=True)

    def serve_path(self, *, body: bool) -> None:
        if not self.authorize():
            return
        path, query = self.request_path()
        if path.startswith("/.manifest"):
            rest = path[len("/.manifest"):]
            if rest and not rest.startswith("/"):
                self.send_text(404, f"{path}: not found")
                return
            self.serve_manifest(rest or "/", query, body=body)
            return
        if "manifest" in query:
            self.serve_manifest(path, query, body=body)
            return
        real = self.resolve(path)
        if real is None:
            return
        try:
            st = os.stat(real)
        except FileNotFoundError:
            self.send_text(404, f"{path}: no such file")
            return
        if stat.S_ISDIR(st.st_mode):
            self.serve_directory(path, real, st, body=body)
            return
        if not stat.S_ISREG(st.st_mode):
            self.send_text(403, f"{path}: not a regular file")
            return
        self.serve_file(path, real, st, body=body)

    def serve_directory(self, path: str, real: Path, st: os.stat_result, *, body: bool) -> None:
        self.send_text(403, f"{path}: is a directory; its manifest is at {path.rstrip('/')}/?manifest")

    def serve_manifest(self, path: str, query: dict, *, body: bool) -> None:
        real = self.resolve(path, is_dir=True)
        if real is None:
            return
        recursive = query.get("recursive", ["0"])[0].lower() in ("1", "true", "yes")
        data = json.dumps(mf.build_manifest(self.server.root, real, checksums=self.server.checksums,
                                            recursive=recursive)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def serve_file(self, path: str, real: Path, st: os.stat_result, *, body: bool) -> None:
        size = st.st_size
        headers = self.file_headers(real, st)
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            try:
                start, end = parse_range(rng, size)
                status = 206
            except RangeError as e:
                extra = {"Content-Range": f"bytes */{size}"} if e.status == 416 else {}
                self.send_text(e.status, str(e), extra)
                return
        try:
            f = open(real, "rb", buffering=0)  # noqa: SIM115 - closed by the with below
        except OSError as e:
            self.send_text(403, f"{path}: cannot be read: {e.strerror}")
            return
        with f:
            digest = self.digest_header(real, st) if self.headers.get("Want-Digest") else None
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            for k, v in headers.items():
                self.send_header(k, v)
            if digest:
                self.send_header("Digest", digest)
            self.end_headers()
            if body and end > start:
                self.server.note_range(path, start, end)
                self.send_body(f, start, end)
                self.server.note_sent(end - start)

    def send_body(self, f, start: int, end: int) -> None:
        sock = self.connection
        if not isinstance(sock, ssl.SSLSocket):
            # The kernel copies page cache to socket: no user-space copy at all.
            sent = sock.sendfile(f, start, end - start)
            if sent != end - start:
                raise ConnectionError(f"sendfile sent {sent} of {end - start} bytes")
            return
        buf = bytearray(SEND_BLOCK)
        mv = memoryview(buf)
        fd = f.fileno()
        off = start
        while off < end:
            n = os.preadv(fd, [mv[:min(SEND_BLOCK, end - off)]], off)
            if n <= 0:
                raise ConnectionError(f"file shrank while being sent (at {off} of {end})")
            sock.sendall(mv[:n])
            off += n


def _bind_address(host: str, port: int):
    return (host, port)


def make_source_server(root: Path, *, host: str = "127.0.0.1", port: int = 0,
                       tls: TlsConfig | None) -> DmsHTTPServer:
    """A source server bound to (host, port); call `serve_forever()`, then `shutdown()` and `server_close()`."""
    return DmsHTTPServer(_bind_address(host, port), FileHandler, root=root, tls=tls)
