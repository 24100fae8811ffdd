"""The daaas PKI and the TLS contexts built from it, with real handshakes over loopback."""
from __future__ import annotations

import datetime as dt
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from handshake import handshake

from cli import main as cli_main
from dms import pki, tls


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_ca_key_crl_index_and_refuses_overwrite(tmp_path):
    d = tmp_path / "ca"
    ca = pki.init_ca(d, common_name="unit CA")
    assert ca == d / "ca.pem" and pki.ca_cert_path(d) == ca
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    crl = x509.load_pem_x509_crl(pki.crl_path(d).read_bytes())
    assert len(list(crl)) == 0
    assert pki.list_issued(d) == []
    cert = _load(ca)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(pki.PkiError, match="already exists"):
        pki.init_ca(d)


@pytest.mark.parametrize("role,ekus", [
    ("service", {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
    ("host", {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
    ("user", {ExtendedKeyUsageOID.CLIENT_AUTH}),
])
def test_issue_sets_subject_role_and_usages(tmp_path, role, ekus):
    d = tmp_path / "ca"
    pki.init_ca(d)
    got = pki.issue(d, "node-1", role=role, out_dir=tmp_path / "out")
    assert got.cert == tmp_path / "out" / "node-1.pem"
    assert stat.S_IMODE(got.key.stat().st_mode) == 0o600
    cert = _load(got.cert)
    assert cert.serial_number == got.serial
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == ekus
    assert cert.issuer == _load(pki.ca_cert_path(d)).subject


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "../evil", "role": "user"}, "name"),
    ({"name": "", "role": "user"}, "name"),
    ({"name": "ok", "role": "admin"}, "role"),
    ({"name": "ok", "role": "user", "days": 0}, "days"),
    ({"name": "ok", "role": "user", "ip_addresses": ("not-an-ip",)}, "ip_addresses"),
    ({"name": "ok", "role": "user", "not_before": dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
      "not_after": dt.datetime(2029, 1, 1, tzinfo=dt.UTC)}, "not_after"),
])
def test_issue_rejects_bad_input(tmp_path, kwargs, match):
    d = tmp_path / "ca"
    pki.init_ca(d)
    with pytest.raises(pki.PkiError, match=match):
        pki.issue(d, **kwargs)


def test_issue_without_ca_names_the_directory(tmp_path):
    with pytest.raises(pki.PkiError, match="no CA here"):
        pki.issue(tmp_path / "nothing", "x", role="user")


def test_revoke_by_name_and_serial_updates_crl(tmp_path):
    d = tmp_path / "ca"
    pki.init_ca(d)
    a = pki.issue(d, "a", role="user")
    b = pki.issue(d, "b", role="user")
    pki.revoke(d, "a")
    pki.revoke(d, str(b.serial))
    crl = x509.load_pem_x509_crl(pki.crl_path(d).read_bytes())
    assert {r.serial_number for r in crl} == {a.serial, b.serial}
    assert crl.is_signature_valid(_load(pki.ca_cert_path(d)).public_key())
    with pytest.raises(pki.PkiError, match="no certificate"):
        pki.revoke(d, "nobody")


def test_cli_pki_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DAAAS_PKI_DIR", str(tmp_path / "envca"))
    assert cli_main(["pki", "init"]) == 0
    assert (tmp_path / "envca" / "ca.pem").exists()
    assert cli_main(["pki", "init"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["pki", "issue", "svc", "--role", "service", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "svc.pem").exists()
    assert cli_main(["pki", "issue", "bad/name", "--role", "user"]) == 2
    assert "bad/name" in capsys.readouterr().err
    assert cli_main(["pki", "revoke", "svc"]) == 0
    assert cli_main(["pki", "list", "--dir", str(tmp_path / "envca")]) == 0
    out = capsys.readouterr().out
    assert "svc" in out and "service" in out
    assert cli_main(["pki", "list", "--dir", str(tmp_path / "none")]) == 2


def _handshake(server_ctx, client_ctx):
    return handshake(server_ctx, client_ctx, tls.peer_common_name)


def test_tls_accepts_valid_client_and_rejects_bad_ones(server_tls, client_ctx, user_cert, expired_cert,
                                                       revoked_cert, foreign_cert, selfsigned_cert):
    sctx = tls.config_server_context(server_tls)
    cn, err = _handshake(sctx, client_ctx(user_cert))
    assert err is None and cn == "alice"
    for bad, reason in [(None, "did not return a certificate"), (expired_cert, "expired"), (revoked_cert, "revoked"),
                        (foreign_cert, "certificate verify failed"), (selfsigned_cert, "certificate verify failed")]:
        cn, err = _handshake(sctx, client_ctx(bad))
        assert isinstance(cn, ssl.SSLError), bad
        assert reason in str(cn), (bad, cn)  # the server learns the reason, the client an alert
        assert err is not None


def test_subject_patterns():
    cfg = tls.TlsConfig(cert=None, key=None, ca=None, allowed_subjects=("daaas-*", "alice"))
    assert cfg.subject_allowed("daaas-service") and cfg.subject_allowed("alice")
    assert not cfg.subject_allowed("mallory") and not cfg.subject_allowed(None)
    assert tls.TlsConfig(cert=None, key=None, ca=None).subject_allowed("anyone")


def test_missing_tls_file_is_named(tmp_path, ca_cert):
    with pytest.raises(tls.TlsError, match="nope.pem"):
        tls.client_context(cert=tmp_path / "nope.pem", key=tmp_path / "nope.key", ca=ca_cert)
