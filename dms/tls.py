"""TLS for every daaas endpoint: server and client contexts built from the daaas PKI.

Servers require a client certificate that chains to the configured CA and, when a CRL is given,
is not revoked (checked for the leaf). A certificate that fails these checks ends the handshake
with a TLS alert that names the reason (unknown ca, certificate expired, certificate revoked): the
request never reaches HTTP and nothing is written. Python's `ssl` has no verify callback, so the
"accept, then answer 4xx" trick of nginx is not available; a handshake *without* a client
certificate (the daaas servers let it through the handshake, see `config_server_context`) and a
subject that is not in `allowed_subjects` are answered in HTTP with 403 naming the reason.

Plain sockets are used only when a server is given no `TlsConfig` at all (explicit configuration).
"""
from __future__ import annotations

import fnmatch
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path


class TlsError(Exception):
    """A TLS configuration that cannot be used: the message names the file and the reason."""


@dataclass(frozen=True)
class TlsConfig:
    """How a daaas server speaks TLS.

    `allowed_subjects` holds shell-style patterns (`fnmatch`) matched against the client
    certificate's common name; empty means any certificate from the CA.
    """

    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None
    require_client_cert: bool = True
    allowed_subjects: tuple[str, ...] = ()

    def subject_allowed(self, common_name: str | None) -> bool:
        if not self.allowed_subjects:
            return True
        if common_name is None:
            return False
        return any(fnmatch.fnmatchcase(common_name, p) for p in self.allowed_subjects)


def _check_file(what: str, path: Path | None) -> None:
    if path is not None and not Path(path).is_file():
        raise TlsError(f"{what}: {path}: no such file")


def server_context(*, cert: Path, key: Path, ca: Path, crl: Path | None = None,
                   require_client_cert: bool = True) -> ssl.SSLContext:
    """A server context presenting `cert`, verifying clients against `ca` (and `crl`, leaf only)."""
    for what, p in (("cert", cert), ("key", key), ("ca", ca), ("crl", crl)):
        _check_file(what, p)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(ca))
        if crl is not None:
            ctx.load_verify_locations(cafile=str(crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except ssl.SSLError as e:
        raise TlsError(f"server TLS files (cert {cert}, key {key}, ca {ca}, crl {crl}): {e}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(*, cert: Path | None = None, key: Path | None = None, ca: Path | None) -> ssl.SSLContext:
    """A client context trusting `ca` (system roots when None), presenting `cert`/`key` when given."""
    for what, p in (("cert", cert), ("key", key), ("ca", ca)):
        _check_file(what, p)
    if (cert is None) != (key is None):
        raise TlsError("client cert and key: give both or neither")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca is not None:
            ctx.load_verify_locations(cafile=str(ca))
        else:
            ctx.load_default_certs()
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        raise TlsError(f"client TLS files (cert {cert}, key {key}, ca {ca}): {e}") from None
    return ctx


def config_server_context(config: TlsConfig, *, http_enforced: bool = False) -> ssl.SSLContext:
    """The server context of `config`.

    With `http_enforced`, a missing client certificate passes the handshake (certificates that are
    presented are still fully verified) so that the server can answer 403 naming the reason; the
    server must then check `peer_common_name` itself.
    """
    return server_context(cert=config.cert, key=config.key, ca=config.ca, crl=config.crl,
                          require_client_cert=config.require_client_cert and not http_enforced)


class ServerContextCache:
    """A server context rebuilt when the CRL file changes, so a revocation takes effect without a restart."""

    def __init__(self, config: TlsConfig, *, http_enforced: bool = False):
        self.config = config
        self.http_enforced = http_enforced
        self._lock = threading.Lock()
        self._stamp = self._crl_stamp()
        self._ctx = config_server_context(config, http_enforced=http_enforced)

    def _crl_stamp(self) -> tuple[int, int] | None:
        if self.config.crl is None:
            return None
        try:
            st = os.stat(self.config.crl)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> ssl.SSLContext:
        stamp = self._crl_stamp()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._ctx = config_server_context(self.config, http_enforced=self.http_enforced)
                        self._stamp = stamp
                    except TlsError:
                        pass  # a CRL caught mid-rewrite: keep the previous context, retry next time
        return self._ctx


def peer_common_name(sock) -> str | None:
    """The common name of the verified client certificate on `sock`, or None (plain socket, no certificate)."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    cert = getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None
