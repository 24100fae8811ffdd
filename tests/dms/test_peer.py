"""dms.peer: the client-certificate decision as a table, its CRL reloading, and the handshake that lets it decide.

The table drives `check_peer` (pure: certificate bytes, CA, CRL, time, allowed subjects in; a
verdict out). The handshake tests show why `dms.tls` installs its verify callback (with
`CERT_OPTIONAL` alone OpenSSL still aborts on a certificate that does not verify) and hold
`check_peer` to OpenSSL's own verdict on the shared test certificates.
"""
from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from handshake import handshake

from dms import peer, pki, tls

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def _name(cn: str | None, org: str = "daaas") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _make(cn: str | None, *, issuer: x509.Name | None, key, not_before=NOW - DAY, not_after=NOW + 30 * DAY,
          eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), is_ca: bool | None = False, serial: int | None = None) -> bytes:
    """A certificate's DER: signed by `key`, self-signed (its own new key) when `issuer` is None."""
    own = ec.generate_private_key(ec.SECP256R1())
    subject = _name(cn)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer if issuer is not None else subject)
         .public_key(own.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after))
    if is_ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return b.sign(key if issuer is not None else own, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def ca(pki_dir):
    cert = x509.load_pem_x509_certificate(pki.ca_cert_path(pki_dir).read_bytes())
    key = serialization.load_pem_private_key((pki_dir / pki.CA_KEY).read_bytes(), password=None)
    return cert, key


def _crl(ca_cert, ca_key, revoked: dict[int, dt.datetime], *, next_update=NOW + 30 * DAY):
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(NOW - DAY).next_update(next_update))
    for serial, when in revoked.items():
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(when).build())
    return b.sign(ca_key, hashes.SHA256())


REVOKED_SERIAL = 0x1234ABCD
REVOKED_AT = NOW - 2 * DAY
_foreign_key = ec.generate_private_key(ec.SECP256R1())


def _utc(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# id -> (make der from (ca_cert, ca_key) or None, check_peer keywords, status, exact reason or prefix, CN)
CASES = {
    "valid": (lambda c, k: _make("alice", issuer=c.subject, key=k), {}, 200, "client CN=alice", "alice"),
    "valid, allowed by a pattern": (lambda c, k: _make("daaas-svc", issuer=c.subject, key=k),
                                    {"allowed_subjects": ("alice", "daaas-*")}, 200, "client CN=daaas-svc",
                                    "daaas-svc"),
    "no certificate": (None, {}, 401, "no client certificate: present a certificate issued by the daaas CA", None),
    "no certificate, none required": (None, {"require": False}, 200, "no client certificate (none required)", None),
    "no certificate, none required but subjects are":
        (None, {"require": False, "allowed_subjects": ("alice",)}, 401,
         "a client certificate issued by the daaas CA is required here", None),
    "unreadable": (lambda c, k: b"\x30\x03\x02\x01\x00", {}, 403, "client certificate unreadable: ", None),
    "self-signed": (lambda c, k: _make("alice", issuer=None, key=None), {}, 403,
                    "client certificate is self-signed (CN=alice), not issued by the daaas CA", "alice"),
    "another CA with the same name": (lambda c, k: _make("alice", issuer=c.subject, key=_foreign_key), {}, 403,
                                      "client certificate not issued by the daaas CA: its issuer is named "
                                      "CN=daaas test CA but the signature is not the daaas CA's", "alice"),
    "another CA": (lambda c, k: _make("alice", issuer=_name("other CA", "elsewhere"), key=_foreign_key), {}, 403,
                   "client certificate not issued by the daaas CA: its issuer is CN=other CA", "alice"),
    "the CA's own certificate": (lambda c, k: c.public_bytes(serialization.Encoding.DER), {}, 403,
                                 "client certificate CN=daaas test CA is a CA certificate, not a client's",
                                 "daaas test CA"),
    "a CA certificate it issued": (lambda c, k: _make("sub", issuer=c.subject, key=k, is_ca=True), {}, 403,
                                   "client certificate CN=sub is a CA certificate, not a client's", "sub"),
    "not yet valid": (lambda c, k: _make("alice", issuer=c.subject, key=k, not_before=NOW + DAY), {}, 403,
                      f"client certificate not valid before {_utc(NOW + DAY)}", "alice"),
    "expired": (lambda c, k: _make("alice", issuer=c.subject, key=k, not_before=NOW - 9 * DAY,
                                   not_after=NOW - DAY), {}, 403,
                f"client certificate expired on {_utc(NOW - DAY)}", "alice"),
    "valid to the second": (lambda c, k: _make("alice", issuer=c.subject, key=k, not_after=NOW), {}, 200,
                            "client CN=alice", "alice"),
    "revoked": (lambda c, k: _make("alice", issuer=c.subject, key=k, serial=REVOKED_SERIAL), {"crl": "revoking"},
                403, f"client certificate revoked (serial 0x1234abcd, on {_utc(REVOKED_AT)})", "alice"),
    "revoked, but no CRL given": (lambda c, k: _make("alice", issuer=c.subject, key=k, serial=REVOKED_SERIAL),
                                  {"crl": None}, 200, "client CN=alice", "alice"),
    "CRL out of date": (lambda c, k: _make("alice", issuer=c.subject, key=k), {"crl": "stale"}, 503,
                        f"cannot check revocation: the daaas CRL expired on {_utc(NOW - DAY)}", "alice"),
    "server-only certificate": (lambda c, k: _make("alice", issuer=c.subject, key=k,
                                                   eku=(ExtendedKeyUsageOID.SERVER_AUTH,)), {}, 403,
                                "client certificate CN=alice is not for client authentication (extended key usage)",
                                "alice"),
    "no extended key usage": (lambda c, k: _make("alice", issuer=c.subject, key=k, eku=()), {}, 200,
                              "client CN=alice", "alice"),
    "subject not allowed": (lambda c, k: _make("mallory", issuer=c.subject, key=k), {"allowed_subjects": ("alice",)},
                            403, "client certificate subject CN=mallory is not allowed here", "mallory"),
    "no CN, subjects required": (lambda c, k: _make(None, issuer=c.subject, key=k), {"allowed_subjects": ("alice",)},
                                 403, "client certificate O=daaas has no subject CN to match the allowed subjects",
                                 None),
    "a line break in a self-signed name": (lambda c, k: _make("x\r\nX-Evil: 1", issuer=None, key=None), {}, 403,
                                           "client certificate is self-signed (CN=x\\r\\nX-Evil: 1), "
                                           "not issued by the daaas CA", "x\r\nX-Evil: 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_peer(ca, case):
    make, kw, status, reason, cn = CASES[case]
    ca_cert, ca_key = ca
    crls = {"revoking": _crl(ca_cert, ca_key, {REVOKED_SERIAL: REVOKED_AT}),
            "stale": _crl(ca_cert, ca_key, {}, next_update=NOW - DAY), None: None}
    kw = dict(kw)
    crl = crls[kw.pop("crl", "revoking")]
    der = make(ca_cert, ca_key) if make else None
    got = peer.check_peer(der, ca=ca_cert, crl=crl, now=NOW, **kw)
    assert (got.status, got.ok) == (status, status == 200), got
    assert got.reason == reason or (reason.endswith(": ") and got.reason.startswith(reason)), got.reason
    assert got.common_name == cn
    assert "\r" not in got.reason and "\n" not in got.reason and got.reason.isascii()


def test_subject_patterns():
    assert peer.subject_allowed("anyone", ())
    assert peer.subject_allowed("daaas-dmts", ("alice", "daaas-*"))
    assert not peer.subject_allowed("Alice", ("alice",))  # CNs match case-sensitively
    assert not peer.subject_allowed(None, ("*",))


# ---- PeerVerifier: the CA and CRL files ---------------------------------------------------------------


@pytest.fixture
def own_ca(tmp_path):
    d = tmp_path / "ca"
    pki.init_ca(d)
    return d


def test_a_changed_crl_is_read_again_and_only_then(own_ca, monkeypatch):
    bob = pki.issue(own_ca, "bob", role="user")
    der = x509.load_pem_x509_certificate(bob.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    v = peer.PeerVerifier(ca=pki.ca_cert_path(own_ca), crl=pki.crl_path(own_ca))
    loads = []
    real = peer.load_crl
    monkeypatch.setattr(peer, "load_crl", lambda *a: loads.append(1) or real(*a))
    assert all(v.verify(der).ok for _ in range(20))
    assert loads == []  # unchanged file: a stat per request, no read
    pki.revoke(own_ca, "bob")
    got = v.verify(der)
    assert got.status == 403 and got.reason.startswith(f"client certificate revoked (serial {bob.serial:#x}")
    assert v.verify(der).status == 403 and loads == [1]


def test_an_unreadable_crl_refuses_everyone_until_fixed(own_ca):
    bob = pki.issue(own_ca, "bob", role="user")
    der = x509.load_pem_x509_certificate(bob.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    crl = pki.crl_path(own_ca)
    good = crl.read_bytes()
    v = peer.PeerVerifier(ca=pki.ca_cert_path(own_ca), crl=crl)
    crl.write_text("-----BEGIN X509 CRL-----\ngarbage\n")
    got = v.verify(der)
    assert got.status == 503 and str(crl) in got.reason and got.reason.startswith("cannot check revocation")
    crl.unlink()
    assert v.verify(der).status == 503
    crl.write_bytes(good)
    os.utime(crl, ns=(1, 1))  # a stamp unlike any before, even on a coarse clock
    assert v.verify(der).ok


def test_a_crl_from_another_ca_is_a_configuration_error(own_ca, tmp_path, service_cert):
    other = tmp_path / "other"
    pki.init_ca(other)
    with pytest.raises(peer.PeerConfigError, match="not signed by the CA"):
        peer.PeerVerifier(ca=pki.ca_cert_path(own_ca), crl=pki.crl_path(other))
    cfg = tls.TlsConfig(cert=service_cert.cert, key=service_cert.key, ca=pki.ca_cert_path(own_ca),
                        crl=pki.crl_path(other))
    with pytest.raises(tls.TlsError, match=str(pki.crl_path(other))):
        tls.peer_verifier(cfg)
    with pytest.raises(peer.PeerConfigError, match="nope.pem: cannot read"):
        peer.PeerVerifier(ca=tmp_path / "nope.pem")


# ---- the handshake ------------------------------------------------------------------------------------


def _handshake(server_ctx, client_ctx):
    return handshake(server_ctx, client_ctx, peer.peer_certificate)


def _der(issued) -> bytes:
    return x509.load_pem_x509_certificate(Path(issued.cert).read_bytes()).public_bytes(serialization.Encoding.DER)


def test_cert_optional_alone_still_aborts_on_a_bad_certificate(service_cert, ca_cert, client_ctx, foreign_cert):
    """Why dms.tls installs a verify callback: OpenSSL ends the handshake even when the certificate is optional."""
    strict = tls.server_context(cert=service_cert.cert, key=service_cert.key, ca=ca_cert, require_client_cert=False)
    seen, err = _handshake(strict, client_ctx(foreign_cert))
    assert isinstance(seen, ssl.SSLCertVerificationError) and err is not None


def test_http_enforced_handshake_lets_every_certificate_through(server_tls, client_ctx, user_cert, foreign_cert,
                                                                selfsigned_cert, expired_cert, revoked_cert):
    ctx = tls.config_server_context(server_tls, http_enforced=True)
    for issued in (user_cert, foreign_cert, selfsigned_cert, expired_cert, revoked_cert):
        seen, err = _handshake(ctx, client_ctx(issued))
        assert err is None and seen == _der(issued), (issued, seen, err)
    seen, err = _handshake(ctx, client_ctx(None))
    assert err is None and seen is None


def test_check_peer_agrees_with_openssl(server_tls, client_ctx, user_cert, service_cert, host_cert, other_user_cert,
                                        foreign_cert, selfsigned_cert, expired_cert, revoked_cert):
    """OpenSSL verifying in the handshake (CA, CRL) and dms.peer accept and refuse the same certificates."""
    strict = tls.config_server_context(server_tls)
    verifier = tls.peer_verifier(server_tls)
    verdicts = {}
    for issued in (user_cert, service_cert, host_cert, other_user_cert, foreign_cert, selfsigned_cert,
                   expired_cert, revoked_cert):
        seen, err = _handshake(strict, client_ctx(issued))
        openssl_ok = err is None and isinstance(seen, bytes)
        verdicts[str(issued.cert)] = (openssl_ok, verifier.verify(_der(issued)).ok)
    assert all(a == b for a, b in verdicts.values()), verdicts
    assert sum(a for a, _ in verdicts.values()) == 4  # the four valid ones; the others refused by both
