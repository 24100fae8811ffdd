"""Who is calling: the client certificate of a daaas server's peer, verified after the TLS handshake.

Every daaas server (source, DMTS, DMS API) lets any client certificate through the TLS handshake
(`dms.tls.config_server_context(..., http_enforced=True)`) and decides here, per request, before
doing anything else. A refusal is then an HTTP answer naming the reason instead of a bare TLS alert:

    401  no client certificate
    403  unreadable, self-signed, issued by another CA, not yet valid, expired, revoked, a CA
         certificate, not for client authentication, or a subject CN that is not allowed
    503  the server cannot check revocation (its CRL is unreadable, badly signed or out of date)

`check_peer` is the decision: a pure function of the certificate's DER bytes, the CA, the CRL, the
time and the allowed subjects. `PeerVerifier` is its shell: it loads the CA once, re-reads the CRL
when the file changes (an mtime/size/inode check per request, so a revocation takes effect on the
next request without a restart), reads the clock and calls `check_peer`.

The daaas CA issues end-entity certificates directly (`path_length=0`), so the chain is the leaf and
the CA. Proof that the client holds the certificate's private key is TLS's own (CertificateVerify),
which OpenSSL checks whatever the chain verification says.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import functools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("dms.peer")


class PeerConfigError(Exception):
    """The CA or CRL a server should verify clients with cannot be used: names the file and the reason."""


@dataclass(frozen=True)
class PeerVerdict:
    """What to do with a request: `status` 200 lets it through; anything else is the HTTP answer."""

    status: int
    reason: str
    common_name: str | None = None
    serial: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def subject_allowed(common_name: str | None, patterns: Sequence[str]) -> bool:
    """True when `patterns` (shell-style, matched case-sensitively against the CN) is empty or one matches."""
    if not patterns:
        return True
    if common_name is None:
        return False
    return any(fnmatch.fnmatchcase(common_name, p) for p in patterns)


def _show(text: str, limit: int = 120) -> str:
    """`text` safe to put in a reason (and an HTTP header): ASCII, no control characters, bounded.

    Names in a self-signed or foreign certificate are the caller's choice: they must not smuggle
    line breaks into a response.
    """
    shown = repr(text)[1:-1].encode("ascii", "backslashreplace").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _utc(t: datetime) -> str:
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _name(name: x509.Name) -> str:
    cn = _common_name(name)
    return f"CN={_show(cn)}" if cn is not None else _show(name.rfc4514_string())


def check_subject(common_name: str | None, allowed_subjects: Sequence[str]) -> PeerVerdict:
    """The subject part of `check_peer`, alone (for callers that learn the CN some other way)."""
    if common_name is None:
        if allowed_subjects:
            return PeerVerdict(401, "a client certificate issued by the daaas CA is required here")
        return PeerVerdict(200, "no client certificate (none required)")
    if not subject_allowed(common_name, allowed_subjects):
        return PeerVerdict(403, f"client certificate subject CN={_show(common_name)} is not allowed here",
                           common_name)
    return PeerVerdict(200, f"client CN={_show(common_name)}", common_name)


@dataclass(frozen=True)
class _Facts:
    """What a certificate says that does not depend on the time, the CRL or the allowed subjects."""

    refusal: str | None  # a reason to refuse it whatever the rest (unreadable, not the CA's, a CA, not a client)
    common_name: str | None = None
    serial: int | None = None
    subject: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None


@functools.lru_cache(maxsize=4096)
def _facts(der: bytes, ca: x509.Certificate) -> _Facts:
    """The time-independent part of `check_peer`.

    Memoized (it is pure): parsing and the signature check are nearly all of `check_peer`'s cost,
    and a client sends the same certificate with every request.
    """
    try:
        return _read_facts(x509.load_der_x509_certificate(der), ca)
    except ValueError as e:  # cryptography parses names and extensions lazily: a bad one raises here
        return _Facts(f"client certificate unreadable: {_show(str(e))}")


def _read_facts(cert: x509.Certificate, ca: x509.Certificate) -> _Facts:
    cn, serial = _common_name(cert.subject), cert.serial_number
    subject = _name(cert.subject)

    def refuse(reason: str | None) -> _Facts:
        return _Facts(reason, cn, serial, subject, cert.not_valid_before_utc, cert.not_valid_after_utc)

    if cert.issuer != ca.subject:
        if cert.issuer == cert.subject:
            return refuse(f"client certificate is self-signed ({subject}), not issued by the daaas CA")
        return refuse(f"client certificate not issued by the daaas CA: its issuer is {_name(cert.issuer)}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        # Same issuer name, another key: a certificate from another CA that happens to share the name.
        return refuse(f"client certificate not issued by the daaas CA: its issuer is named {_name(cert.issuer)} "
                      "but the signature is not the daaas CA's")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return refuse(f"client certificate {subject} is a CA certificate, not a client's")
    except x509.ExtensionNotFound:
        pass
    try:
        if ExtendedKeyUsageOID.CLIENT_AUTH not in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value:
            return refuse(f"client certificate {subject} is not for client authentication (extended key usage)")
    except x509.ExtensionNotFound:
        pass
    return refuse(None)


def check_peer(der: bytes | None, *, ca: x509.Certificate, crl: x509.CertificateRevocationList | None,
               now: datetime, allowed_subjects: Sequence[str] = (), require: bool = True) -> PeerVerdict:
    """Decide on a client certificate (`der`, None when the client sent none).

    `ca` is the daaas CA; `crl` its revocation list, already checked to be signed by `ca` (None: no
    revocation checking); `now` a timezone-aware time; `allowed_subjects` CN patterns (empty: any);
    `require` False lets a client without a certificate through when no subject is required.
    The reason names the first thing wrong: who issued it (and what it is for), then its validity
    now, revocation, and last the subject, which means something only in a certificate we trust.
    """
    if der is None:
        if require:
            return PeerVerdict(401, "no client certificate: present a certificate issued by the daaas CA")
        return check_subject(None, allowed_subjects)
    f = _facts(der, ca)
    cn, serial = f.common_name, f.serial

    def refuse(reason: str, status: int = 403) -> PeerVerdict:
        return PeerVerdict(status, reason, cn, serial)

    if f.refusal is not None:
        return refuse(f.refusal)
    assert f.not_before is not None and f.not_after is not None and serial is not None
    if now < f.not_before:
        return refuse(f"client certificate not valid before {_utc(f.not_before)}")
    if now > f.not_after:
        return refuse(f"client certificate expired on {_utc(f.not_after)}")
    if crl is not None:
        if crl.next_update_utc is not None and now > crl.next_update_utc:
            return refuse(f"cannot check revocation: the daaas CRL expired on {_utc(crl.next_update_utc)}", 503)
        revoked = crl.get_revoked_certificate_by_serial_number(serial)
        if revoked is not None:
            return refuse(f"client certificate revoked (serial {serial:#x}, "
                          f"on {_utc(revoked.revocation_date_utc)})")
    if cn is None:
        if allowed_subjects:
            return refuse(f"client certificate {f.subject} has no subject CN to match the allowed subjects")
        return PeerVerdict(200, f"client {f.subject}", cn, serial)
    verdict = check_subject(cn, allowed_subjects)
    return PeerVerdict(verdict.status, verdict.reason, cn, serial)


def load_ca(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as e:
        raise PeerConfigError(f"ca: {path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise PeerConfigError(f"ca: {path}: not a PEM certificate: {e}") from None


def load_crl(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL at `path`, refused unless the CA signed it (an unsigned list could un-revoke anyone)."""
    try:
        crl = x509.load_pem_x509_crl(Path(path).read_bytes())
    except OSError as e:
        raise PeerConfigError(f"crl: {path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise PeerConfigError(f"crl: {path}: not a PEM CRL: {e}") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):
        raise PeerConfigError(f"crl: {path}: not signed by the CA {_name(ca.subject)}")
    return crl


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class PeerVerifier:
    """`check_peer` against a CA file and a CRL file that is re-read when it changes on disk."""

    def __init__(self, *, ca: Path, crl: Path | None = None, allowed_subjects: Sequence[str] = (),
                 require: bool = True):
        self.ca_path, self.crl_path = Path(ca), (Path(crl) if crl is not None else None)
        self.allowed_subjects = tuple(allowed_subjects)
        self.require = require
        self.ca = load_ca(self.ca_path)
        self._lock = threading.Lock()
        self._crl: x509.CertificateRevocationList | None = None
        self._crl_error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        if self.crl_path is not None:
            self._stamp = _stamp(self.crl_path)
            self._crl = load_crl(self.crl_path, self.ca)  # a bad CRL at start is a configuration error

    def _current_crl(self) -> tuple[x509.CertificateRevocationList | None, str | None]:
        """The CRL, re-read if its file changed; (None, reason) when it cannot be trusted now."""
        if self.crl_path is None:
            return None, None
        stamp = _stamp(self.crl_path)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._crl, self._crl_error = load_crl(self.crl_path, self.ca), None
                    except PeerConfigError as e:
                        # Fail closed: a list we cannot read might revoke the very client asking.
                        self._crl, self._crl_error = None, str(e)
                        log.warning("refusing client certificates until the CRL is fixed: %s", e)
                    self._stamp = stamp
        return self._crl, self._crl_error

    def verify(self, der: bytes | None, *, now: datetime | None = None) -> PeerVerdict:
        crl, error = self._current_crl()
        if error is not None and der is not None:
            return PeerVerdict(503, f"cannot check revocation: {_show(error, 300)}")
        return check_peer(der, ca=self.ca, crl=crl, now=now or datetime.now(_dt.UTC),
                          allowed_subjects=self.allowed_subjects, require=self.require)


def peer_certificate(sock) -> bytes | None:
    """The DER client certificate presented on `sock` (verified or not), or None (plain socket, none sent)."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    return getpeercert(binary_form=True) or None
