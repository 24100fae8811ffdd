"""Who and what the DMS endpoints refuse, and that a refusal writes nothing.

Certificates that fail verification (self-signed, another CA, expired, revoked) end the TLS
handshake with an alert naming the reason (Python's ssl has no verify callback, so these cannot be
turned into HTTP answers); the server records the reason. A missing certificate and a subject that is
not allowed get 403; bad paths 400/403; ranges past the end 416.
"""
from __future__ import annotations

import dataclasses
import http.client
import ssl
import time

import pytest

from dms.dmts import make_dmts_server
from dms.source import make_source_server


@pytest.fixture
def servers(tmp_path, serve, make_file, server_tls, service_client_ctx):
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    dst_root.mkdir()
    data = make_file(src_root / "ok.bin", 300_000, seed=2)
    (tmp_path / "secret.txt").write_text("outside the root")
    (src_root / "link").symlink_to(tmp_path)
    (dst_root / "link").symlink_to(tmp_path)
    restricted = dataclasses.replace(server_tls, allowed_subjects=("alice", "daaas-*"))
    source = serve(make_source_server(src_root, tls=restricted))
    dmts = serve(make_dmts_server(dst_root, tls=restricted, client_tls=service_client_ctx))
    return {"source": source, "dmts": dmts, "dst": dst_root, "tmp": tmp_path, "data": data}


def request(port, method, path, ctx, headers=None):
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _written(s):
    return sorted(p.name for p in s["dst"].iterdir()) + sorted(p.name for p in s["tmp"].iterdir())


@pytest.mark.parametrize("which,server_reason", [
    ("selfsigned_cert", "self-signed certificate"),
    ("foreign_cert", "unable to get local issuer certificate"),
    ("expired_cert", "certificate has expired"),
    ("revoked_cert", "certificate revoked"),
])
def test_bad_certificates_are_refused_in_the_handshake(servers, client_ctx, request_fixture, which, server_reason):
    before = _written(servers)
    cert = request_fixture(which)
    copy_headers = {"Source": f"https://localhost:{servers['source'].port}/ok.bin"}
    for name, method, headers in (("dmts", "COPY", copy_headers), ("source", "GET", {})):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(servers[name].port, method, "/new.bin" if name == "dmts" else "/ok.bin", client_ctx(cert),
                    headers)
        deadline = time.monotonic() + 5  # the server thread records the reason after the client saw the alert
        while not any(server_reason in r for r in servers[name].server.rejections) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(server_reason in r for r in servers[name].server.rejections), servers[name].server.rejections
    assert _written(servers) == before


@pytest.fixture
def request_fixture(request):
    return request.getfixturevalue


def test_missing_certificate_and_unlisted_subject_get_403(servers, client_ctx, other_user_cert):
    before = _written(servers)
    copy_headers = {"Source": f"https://localhost:{servers['source'].port}/ok.bin"}
    status, body = request(servers["dmts"].port, "COPY", "/new.bin", client_ctx(None), copy_headers)
    assert status == 403 and "client certificate required" in body
    status, body = request(servers["dmts"].port, "COPY", "/new.bin", client_ctx(other_user_cert), copy_headers)
    assert status == 403 and "CN=mallory is not allowed" in body
    status, body = request(servers["source"].port, "GET", "/ok.bin", client_ctx(other_user_cert))
    assert status == 403 and "mallory" in body
    assert _written(servers) == before


@pytest.mark.parametrize("path,status,reason", [
    ("/../escape.bin", 400, "'..'"),
    ("/sub/../../escape.bin", 400, "'..'"),
    ("/%2e%2e/escape.bin", 400, "'..'"),
    ("//tmp/escape.bin", 400, "absolute"),
    ("/link/escape.bin", 403, "leaves the served root"),
])
def test_bad_destination_paths(servers, client_ctx, path, status, reason):
    before = _written(servers)
    got, body = request(servers["dmts"].port, "COPY", path, client_ctx(),
                        {"Source": f"https://localhost:{servers['source'].port}/ok.bin"})
    assert got == status and reason in body, body
    assert _written(servers) == before


@pytest.mark.parametrize("path,status,reason", [
    ("/../secret.txt", 400, "'..'"),
    ("//etc/passwd", 400, "absolute"),
    ("/link/secret.txt", 403, "leaves the served root"),
])
def test_bad_source_paths(servers, client_ctx, path, status, reason):
    got, body = request(servers["source"].port, "GET", path, client_ctx())
    assert got == status and reason in body and "outside the root" not in body


def test_source_path_refusal_reaches_the_copy_client(servers, client_ctx):
    before = _written(servers)
    status, body = request(servers["dmts"].port, "COPY", "/new.bin", client_ctx(),
                           {"Source": f"https://localhost:{servers['source'].port}/link/secret.txt"})
    assert status == 202 and "failure: source answered HEAD with 403" in body
    assert _written(servers) == before


def test_ranges_beyond_the_file(servers, client_ctx):
    n = len(servers["data"])
    status, body = request(servers["source"].port, "GET", "/ok.bin", client_ctx(), {"Range": f"bytes={n}-{n + 10}"})
    assert status == 416 and "past the end" in body
    status, body = request(servers["source"].port, "GET", "/ok.bin", client_ctx(), {"Range": "bytes=10-5"})
    assert status == 400


def test_a_revocation_takes_effect_without_a_restart(tmp_path, serve, make_file):
    from dms import pki, tls
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    svc = pki.issue(ca, "svc", role="service")
    user = pki.issue(ca, "bob", role="user")
    make_file(tmp_path / "src" / "ok.bin", 1000)
    cfg = tls.TlsConfig(cert=svc.cert, key=svc.key, ca=pki.ca_cert_path(ca), crl=pki.crl_path(ca))
    source = serve(make_source_server(tmp_path / "src", tls=cfg))
    ctx = tls.client_context(cert=user.cert, key=user.key, ca=pki.ca_cert_path(ca))
    assert request(source.port, "GET", "/ok.bin", ctx)[0] == 200
    time.sleep(0.01)  # a distinct CRL mtime even on coarse clocks
    pki.revoke(ca, "bob")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request(source.port, "GET", "/ok.bin", ctx)
