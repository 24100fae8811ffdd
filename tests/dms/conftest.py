"""Shared fixtures for the DMS tests: a test PKI built with `dms.pki`, TLS configs and contexts.

Session fixtures (built once, reused by every DMS test module, including the DMS API's):

- `pki_dir`: the test CA's directory (ca.pem, ca.key, crl.pem, index.json, certs/).
- `ca_cert`, `crl_file`: paths of the CA certificate and its CRL (`revoked_cert` is on it).
- `capath`: the CA in OpenSSL's hashed layout (`<hash>.0` + `<hash>.r0`), for davix/gfal2.
- `service_cert`: `Issued` for CN "daaas-service" (role service; SAN localhost, 127.0.0.1).
- `host_cert`: `Issued` for CN "daaas-host" (role host).
- `user_cert`: `Issued` for CN "alice" (role user).
- `other_user_cert`: `Issued` for CN "mallory" (role user, valid; used for "subject not allowed").
- `expired_cert`: `Issued` for CN "expired-user", valid from 10 days ago to 1 day ago.
- `revoked_cert`: `Issued` for CN "revoked-user", revoked (on `crl_file`).
- `foreign_ca_dir`, `foreign_cert`: another CA and a user certificate it issued (CN "alice").
- `selfsigned_cert`: `Issued` (serial of the cert) for a self-signed leaf with CN "alice".
- `server_tls`: `TlsConfig` with `service_cert`, the CA and CRL, client certificates required, any subject.
- `client_ctx(cert=...)`: a factory of client `ssl.SSLContext`s trusting the test CA; default cert `user_cert`.
- `service_client_ctx`: a client context presenting `service_cert` (what a DMTS uses to pull).

Helpers, as fixtures (there is no tests/__init__.py, so test modules cannot import from conftest):
- `serve`: `serve(server) -> ServerThread` runs `server.serve_forever` in a thread; stopped at teardown
  (or earlier with `.stop()`); `.port` is the bound port.
- `make_file`: `make_file(path, size, seed=0) -> bytes` writes reproducible random bytes (mtime 1.6e9).
- `free_port`: `free_port() -> int`, a free loopback TCP port.
- `proxy`: `proxy(upstream_port, cut_after=None, cut_count=0, rate=None) -> Proxy`, a TCP relay that counts
  bytes (`down_bytes`), records what clients send (`upstream_data`), cuts or throttles connections, and
  can `block()`/`unblock()` (a source that stops and comes back); closed at teardown.

tests/dms has no `__init__.py` on purpose: with one, pytest would import it as the package `dms`
and shadow the real one (there is no tests/__init__.py).
"""
from __future__ import annotations

import datetime as dt
import os
import random
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dms import pki, tls


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "ca"
    pki.init_ca(d, common_name="daaas test CA")
    return d


@pytest.fixture(scope="session")
def ca_cert(pki_dir) -> Path:
    return pki.ca_cert_path(pki_dir)


@pytest.fixture(scope="session")
def service_cert(pki_dir) -> pki.Issued:
    return pki.issue(pki_dir, "daaas-service", role="service")


@pytest.fixture(scope="session")
def host_cert(pki_dir) -> pki.Issued:
    return pki.issue(pki_dir, "daaas-host", role="host")


@pytest.fixture(scope="session")
def user_cert(pki_dir) -> pki.Issued:
    return pki.issue(pki_dir, "alice", role="user")


@pytest.fixture(scope="session")
def other_user_cert(pki_dir) -> pki.Issued:
    return pki.issue(pki_dir, "mallory", role="user")


@pytest.fixture(scope="session")
def expired_cert(pki_dir) -> pki.Issued:
    now = dt.datetime.now(dt.UTC)
    return pki.issue(pki_dir, "expired-user", role="user", not_before=now - dt.timedelta(days=10),
                     not_after=now - dt.timedelta(days=1))


@pytest.fixture(scope="session")
def revoked_cert(pki_dir) -> pki.Issued:
    got = pki.issue(pki_dir, "revoked-user", role="user")
    pki.revoke(pki_dir, got.serial)
    return got


@pytest.fixture(scope="session")
def crl_file(pki_dir, revoked_cert) -> Path:
    # Depends on revoked_cert so that the CRL every server loads already lists it.
    return pki.crl_path(pki_dir)


@pytest.fixture(scope="session")
def capath(pki_dir, crl_file) -> Path:
    return pki.hashed_ca_dir(pki_dir)


@pytest.fixture(scope="session")
def foreign_ca_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("foreign-pki") / "ca"
    pki.init_ca(d, common_name="daaas test CA")  # same name, different key: must still be rejected
    return d


@pytest.fixture(scope="session")
def foreign_cert(foreign_ca_dir) -> pki.Issued:
    return pki.issue(foreign_ca_dir, "alice", role="user")


@pytest.fixture(scope="session")
def selfsigned_cert(tmp_path_factory) -> pki.Issued:
    d = tmp_path_factory.mktemp("selfsigned")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "daaas"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "user"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    now = dt.datetime.now(dt.UTC)
    serial = x509.random_serial_number()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    (d / "alice.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "alice.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return pki.Issued(cert=d / "alice.pem", key=d / "alice.key", serial=serial)


@pytest.fixture(scope="session")
def server_tls(service_cert, ca_cert, crl_file) -> tls.TlsConfig:
    return tls.TlsConfig(cert=service_cert.cert, key=service_cert.key, ca=ca_cert, crl=crl_file)


@pytest.fixture(scope="session")
def client_ctx(ca_cert, user_cert):
    def make(cert: pki.Issued | None = user_cert):
        if cert is None:
            return tls.client_context(ca=ca_cert)
        return tls.client_context(cert=cert.cert, key=cert.key, ca=ca_cert)
    return make


@pytest.fixture(scope="session")
def service_client_ctx(ca_cert, service_cert):
    return tls.client_context(cert=service_cert.cert, key=service_cert.key, ca=ca_cert)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """Run a server's `serve_forever` in a thread; `stop()` shuts it down and joins the thread."""

    def __init__(self, server):
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _make_file(path: Path, size: int, seed: int = 0) -> bytes:
    """Write `size` pseudo-random bytes (reproducible from `seed`) to `path` and return them."""
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return data


@pytest.fixture
def serve():
    started: list[ServerThread] = []

    def start(server) -> ServerThread:
        st = ServerThread(server)
        started.append(st)
        return st
    yield start
    for st in started:
        st.stop()


@pytest.fixture(scope="session")
def make_file():
    return _make_file


@pytest.fixture(scope="session")
def free_port():
    return _free_port


class Proxy:
    """A TCP relay in front of a server: counts bytes, records client bytes, cuts or throttles streams.

    - `cut_after`: close each of the first `cut_count` connections after relaying that many bytes downstream;
    - `rate`: bytes per second per connection downstream (None: unlimited);
    - `block()`: drop every connection and refuse new ones (the source "stops"); `unblock()` to resume.
    TLS passes through untouched (the client still verifies the server's certificate).
    """

    def __init__(self, upstream_port: int, *, cut_after: int | None = None, cut_count: int = 0,
                 rate: float | None = None):
        import socket
        self.upstream_port = upstream_port
        self.cut_after, self.cut_count, self.rate = cut_after, cut_count, rate
        self.down_bytes = 0
        self.cuts = 0
        self.upstream_data = bytearray()
        self.blocked = False
        self._lock = threading.Lock()
        self._socks: list = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self):
        import socket
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                cut = self.cut_after if self.cuts < self.cut_count else None
                if cut is not None:
                    self.cuts += 1
                self._socks += [client, up]
            for args in ((client, up, False, None), (up, client, True, cut)):
                t = threading.Thread(target=self._pipe, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _pipe(self, src, dst, downstream: bool, cut: int | None):
        import time
        sent = 0
        start = time.monotonic()
        try:
            while True:
                data = src.recv(65536 if self.rate is None else 16384)
                if not data or self.blocked:
                    break
                if cut is not None and sent + len(data) >= cut:
                    data = data[:cut - sent]
                    dst.sendall(data)
                    with self._lock:
                        self.down_bytes += len(data)
                    break
                dst.sendall(data)
                sent += len(data)
                with self._lock:
                    if downstream:
                        self.down_bytes += len(data)
                    else:
                        self.upstream_data += data
                if self.rate:
                    ahead = sent / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            import socket
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def block(self) -> None:
        import socket
        self.blocked = True
        with self._lock:
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def unblock(self) -> None:
        self.blocked = False

    def close(self) -> None:
        import socket
        self._closed = True
        self.block()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.listener.close()
        for t in self._threads:
            t.join(5)


@pytest.fixture
def proxy():
    made: list[Proxy] = []

    def make(upstream_port: int, **kw) -> Proxy:
        p = Proxy(upstream_port, **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()
