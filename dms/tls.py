"""TLS for every daaas endpoint: server and client contexts built from the daaas PKI.

Clients verify servers strictly: a server certificate must chain to the configured CA
(`client_context`), so daaas only talks to services that prove who they are.

Servers verify clients in HTTP, not in the handshake: `config_server_context(..., http_enforced=True)`
asks every client for a certificate but lets any certificate (or none) through the handshake, and
the server then decides per request with `dms.peer` (chain to the CA, validity, CRL, extended key
usage, subject), answering 401/403 with the reason before it reads or writes anything. A TLS alert
would tell the client only "unknown ca" or "certificate expired", and tell it nothing at all about a
subject that is not allowed.

Why the handshake needs help: with `CERT_OPTIONAL`, OpenSSL still aborts the handshake when a
certificate *is* presented and does not verify, and without `SSL_VERIFY_PEER` (`CERT_NONE`) it never
asks for one. Python's `ssl` offers no verify callback, so `_accept_any_client_certificate` installs
OpenSSL's own hook, `SSL_CTX_set_verify`, through ctypes, with a callback that accepts the chain;
the certificate is then read with `getpeercert(binary_form=True)` and verified by `dms.peer`. The
client's proof of its key (TLS CertificateVerify) is still checked by OpenSSL.

`config_server_context(config)` (without `http_enforced`) is the plain OpenSSL check in the
handshake (CA, CRL for the leaf); tests use it as an independent oracle for `dms.peer`.

Plain sockets are used only when a server is given no `TlsConfig` at all (explicit configuration).
"""
from __future__ import annotations

import ctypes
import functools
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from dms import peer


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
        return peer.subject_allowed(common_name, self.allowed_subjects)


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

    With `http_enforced`, every client is asked for a certificate and any certificate (or none)
    passes the handshake; the server must then check each request with `peer_verifier(config)`.
    Without it, OpenSSL verifies in the handshake (CA, CRL) and a bad certificate gets a TLS alert.
    """
    if not http_enforced:
        return server_context(cert=config.cert, key=config.key, ca=config.ca, crl=config.crl,
                              require_client_cert=config.require_client_cert)
    return http_enforced_server_context(cert=config.cert, key=config.key)


def http_enforced_server_context(*, cert: Path, key: Path) -> ssl.SSLContext:
    """A server context presenting `cert` that requests a client certificate and leaves its verification to HTTP."""
    for what, p in (("cert", cert), ("key", key)):
        _check_file(what, p)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        raise TlsError(f"server TLS files (cert {cert}, key {key}): {e}") from None
    ctx.verify_mode = ssl.CERT_OPTIONAL
    _accept_any_client_certificate(ctx)  # last: setting verify_mode again would drop the callback
    return ctx


_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _accept_chain(preverify_ok: int, store_ctx: int) -> int:
    return 1  # the chain is judged per request by dms.peer, which can answer in HTTP


@functools.cache
def _openssl():
    """(SSL_CTX_set_verify, SSL_CTX_get_verify_mode, the callback) of the OpenSSL that `ssl` uses.

    Symbols are looked up through the `_ssl` extension's handle, which resolves them in the libssl
    it was linked with (the process's global namespace when `_ssl` is built in).
    """
    import _ssl
    if sys.implementation.name != "cpython":
        raise TlsError(f"client certificates checked in HTTP need CPython's ssl, not {sys.implementation.name}")
    try:
        lib = ctypes.CDLL(getattr(_ssl, "__file__", None))
        set_verify, get_mode = lib.SSL_CTX_set_verify, lib.SSL_CTX_get_verify_mode
    except (OSError, AttributeError) as e:
        raise TlsError(f"cannot reach OpenSSL's SSL_CTX_set_verify through {_ssl!r}: {e}") from None
    set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
    set_verify.restype = None
    get_mode.argtypes = [ctypes.c_void_p]
    get_mode.restype = ctypes.c_int
    return set_verify, get_mode, _VERIFY_CALLBACK(_accept_chain)  # cached: the callback must outlive every context


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The `SSL_CTX *` inside `ctx`: CPython's PySSLContext holds it right after the object header.

    Checked before use: OpenSSL must report the verify mode that Python just set, for two different
    modes, or the layout is not what we think and nothing is touched.
    """
    _, get_mode, _ = _openssl()
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr:
        raise TlsError("cannot find the OpenSSL context inside ssl.SSLContext")
    wanted = ctx.verify_mode
    for mode, bits in ((ssl.CERT_NONE, 0), (ssl.CERT_OPTIONAL, 1)):
        ctx.verify_mode = mode
        if get_mode(ptr) != bits:
            ctx.verify_mode = wanted
            raise TlsError("ssl.SSLContext's layout is not the one expected; cannot install the verify callback")
    ctx.verify_mode = wanted
    return ptr


def _accept_any_client_certificate(ctx: ssl.SSLContext) -> None:
    """Ask for a client certificate (SSL_VERIFY_PEER) but let the handshake succeed whatever it is."""
    set_verify, get_mode, callback = _openssl()
    ptr = _ssl_ctx_pointer(ctx)
    set_verify(ptr, 1, callback)  # SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT: none is a 401, in HTTP
    if get_mode(ptr) != 1:
        raise TlsError("installing the client-certificate callback did not take effect")


def peer_verifier(config: TlsConfig) -> peer.PeerVerifier:
    """The per-request client-certificate check of a server configured with `config`."""
    try:
        return peer.PeerVerifier(ca=config.ca, crl=config.crl, allowed_subjects=config.allowed_subjects,
                                 require=config.require_client_cert)
    except peer.PeerConfigError as e:
        raise TlsError(str(e)) from None


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
