"""Who and what the DMS endpoints refuse, and that a refusal writes nothing.

Every bad client certificate passes the TLS handshake and is refused in HTTP before anything else
happens: 401 without a certificate, 403 naming the reason for a self-signed one, one from another
CA, an expired one, a revoked one and a subject that is not allowed. Each kind is tried on every
endpoint (source GET and HEAD, DMTS COPY and PUT, DMS API POST) over real TLS on loopback, and after
each refusal nothing is written: no file, no part file or DMTS journal, no transfer in the API's
journal or event log, no request to the source. Bad paths get 400/403, ranges past the end 416.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time

import pytest
from cryptography import x509

from dms import api
from dms.dmts import make_dmts_server
from dms.source import make_source_server


def _world(tmp_path, start, make_file, server_tls, service_client_ctx, service_cert, ca_cert, crl_file):
    """A source, a DMTS and a DMS API, all TLS, under `tmp_path`; `start(server)` runs each one."""
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    dst_root.mkdir()
    data = make_file(src_root / "ok.bin", 300_000, seed=2)
    (tmp_path / "secret.txt").write_text("outside the root")
    (src_root / "link").symlink_to(tmp_path)
    (dst_root / "link").symlink_to(tmp_path)
    restricted = dataclasses.replace(server_tls, allowed_subjects=("alice", "daaas-*"))
    source = start(make_source_server(src_root, tls=restricted))
    dmts = start(make_dmts_server(dst_root, tls=restricted, client_tls=service_client_ctx))
    app = api.create_app({"DB": str(tmp_path / "api" / "journal.sqlite"),
                          "EVENT_LOG": str(tmp_path / "api" / "ev.jsonl"),
                          "CERT": str(service_cert.cert), "KEY": str(service_cert.key), "CA": str(ca_cert),
                          "CRL": str(crl_file), "ALLOWED_SUBJECTS": ["alice"], "COPY_TIMEOUT": 30.0})
    api_srv = start(api.make_api_server(app, host="127.0.0.1", port=0, ssl_context=api.server_ssl_context(app.config)))
    return {"source": source, "dmts": dmts, "api": api_srv, "app": app, "dst": dst_root, "tmp": tmp_path,
            "data": data}


@pytest.fixture
def servers(tmp_path, serve, make_file, server_tls, service_client_ctx, service_cert, ca_cert, crl_file):
    w = _world(tmp_path, serve, make_file, server_tls, service_client_ctx, service_cert, ca_cert, crl_file)
    yield w
    w["app"].extensions["dms"].shutdown()


class _Running:
    """A server in a thread, for the module-scoped servers below (conftest's `serve` is per test)."""

    def __init__(self, server):
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def refusing(tmp_path_factory, make_file, server_tls, service_client_ctx, service_cert, ca_cert, crl_file):
    """Servers shared by every refusal below: a refusal changes nothing, so each one also checks the ones before."""
    running: list[_Running] = []

    def start(server):
        running.append(_Running(server))
        return running[-1]
    w = _world(tmp_path_factory.mktemp("refusing"), start, make_file, server_tls, service_client_ctx, service_cert,
               ca_cert, crl_file)
    yield w
    for r in running:
        r.stop()
    w["app"].extensions["dms"].shutdown()


def request(port, method, path, ctx, headers=None, body=None):
    """(status, body text) of one request over TLS."""
    status, _, text = request_full(port, method, path, ctx, headers, body)
    return status, text


def request_full(port, method, path, ctx, headers=None, body=None):
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _written(s):
    """Every file under the test's directory (source, destination, API journal), with its size."""
    return sorted((str(p.relative_to(s["tmp"])), p.stat().st_size if p.is_file() else -1)
                  for p in s["tmp"].rglob("*") if "journal.sqlite" not in p.name)


def _utc(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cert(issued):
    return x509.load_pem_x509_certificate(issued.cert.read_bytes())


# The bad-certificate kinds: fixture name (None: no certificate) -> (status, the reason, built from the cert).
BAD_CERTIFICATES = {
    "no certificate": (None, 401, lambda c: "no client certificate: present a certificate issued by the daaas CA"),
    "self-signed": ("selfsigned_cert", 403,
                    lambda c: "client certificate is self-signed (CN=alice), not issued by the daaas CA"),
    "another CA": ("foreign_cert", 403,
                   lambda c: "client certificate not issued by the daaas CA: its issuer is named "
                             "CN=daaas test CA but the signature is not the daaas CA's"),
    "expired": ("expired_cert", 403, lambda c: f"client certificate expired on {_utc(c.not_valid_after_utc)}"),
    "revoked": ("revoked_cert", 403,
                lambda c: f"client certificate revoked (serial {c.serial_number:#x}, on "),
    "subject not allowed": ("other_user_cert", 403,
                            lambda c: "client certificate subject CN=mallory is not allowed here"),
}


def _endpoint_request(s, endpoint):
    """(server, method, path, headers, body) that would write if it were let through."""
    copy_src = f"https://localhost:{s['source'].port}/ok.bin"
    if endpoint == "source GET":
        return s["source"], "GET", "/ok.bin", {}, None
    if endpoint == "source HEAD":
        return s["source"], "HEAD", "/ok.bin", {"Want-Digest": "adler32"}, None
    if endpoint == "DMTS COPY":
        return s["dmts"], "COPY", "/new.bin", {"Source": copy_src, "X-Number-Of-Streams": "2"}, None
    if endpoint == "DMTS PUT":
        return s["dmts"], "PUT", "/put.bin", {}, b"x" * 100_000
    body = {"source": f"https://localhost:{s['source'].port}", "destination": f"https://localhost:{s['dmts'].port}",
            "paths": ["ok.bin"]}
    return s["api"], "POST", "/transfers", {"Content-Type": "application/json"}, json.dumps(body).encode()


ENDPOINTS = ("source GET", "source HEAD", "DMTS COPY", "DMTS PUT", "API POST")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", list(BAD_CERTIFICATES))
def test_bad_client_certificates_get_4xx_naming_the_reason_and_nothing_is_written(
        refusing, client_ctx, request, kind, endpoint):
    fixture, status, reason = BAD_CERTIFICATES[kind]
    issued = request.getfixturevalue(fixture) if fixture else None
    expected = reason(_cert(issued) if issued else None)
    before = _written(refusing)
    server, method, path, headers, body = _endpoint_request(refusing, endpoint)
    got, resp_headers, text = request_full(server.port, method, path, client_ctx(issued), headers, body)
    assert got == status, (got, text)
    if endpoint == "API POST":
        doc = json.loads(text)
        assert set(doc) == {"error", "field"} and doc["field"] == "client certificate", doc
        text = doc["error"]
    elif method == "HEAD":
        assert text == ""  # a HEAD answer has no body: the reason is in a header
        text = resp_headers["X-Daaas-Error"]
    assert text.strip().startswith(expected), (text, expected)
    # Nothing written, nothing started.
    assert _written(refusing) == before
    assert refusing["dmts"].server.transfers == {}
    assert refusing["source"].server.ranges_served == []
    assert refusing["app"].extensions["dms"].list() == []
    assert refusing["app"].extensions["dms"].store.load_all() == []
    assert not (refusing["tmp"] / "api" / "ev.jsonl").exists()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_allowed_certificate_gets_through(servers, client_ctx, endpoint):
    """The control for the refusals above: the same requests with alice's certificate do their work."""
    server, method, path, headers, body = _endpoint_request(servers, endpoint)
    got, _, text = request_full(server.port, method, path, client_ctx(), headers, body)
    assert got == {"source GET": 200, "source HEAD": 200, "DMTS COPY": 202, "DMTS PUT": 201, "API POST": 201}[endpoint]
    if endpoint == "DMTS COPY":
        assert "success: Created" in text
        assert (servers["dst"] / "new.bin").read_bytes() == servers["data"]
    if endpoint == "DMTS PUT":
        assert (servers["dst"] / "put.bin").read_bytes() == b"x" * 100_000


def test_curl_upload_with_a_bad_certificate_is_refused_before_100_continue(servers, tmp_path, expired_cert, ca_cert):
    """curl sends `Expect: 100-continue` for a large upload: the refusal comes instead of "100 Continue"."""
    import shutil
    import subprocess
    curl = shutil.which("curl")
    assert curl, "curl not found: install it (.ci/apt-packages.txt)"
    big = tmp_path / "upload.bin"
    big.write_bytes(b"y" * 3_000_000)
    before = _written(servers)
    out = subprocess.run([curl, "-sS", "--cert", str(expired_cert.cert), "--key", str(expired_cert.key),
                          "--cacert", str(ca_cert), "-T", str(big), "-w", "\\n%{http_code}",
                          f"https://localhost:{servers['dmts'].port}/put.bin"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    assert code == "403" and "client certificate expired on" in body, out.stdout
    assert _written(servers) == before


def test_davix_with_a_revoked_certificate_sees_403(servers, revoked_cert, capath):
    """A real HTTP-TPC client learns it was refused (HTTP 403), not that TLS failed."""
    import shutil
    import subprocess
    davix = shutil.which("davix-cp")
    assert davix, "davix-cp not found: install the Debian packages in .ci/apt-packages.txt"
    before = _written(servers)
    out = subprocess.run([davix, "--copy-mode", "pull", "--cert", str(revoked_cert.cert), "--key",
                          str(revoked_cert.key), "--capath", str(capath),
                          f"https://localhost:{servers['source'].port}/ok.bin",
                          f"https://localhost:{servers['dmts'].port}/new.bin"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0 and "HTTP 403" in out.stdout + out.stderr, out.stdout + out.stderr
    assert any("revoked (serial" in r for r in servers["dmts"].server.rejections)
    assert _written(servers) == before and servers["dmts"].server.transfers == {}


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
    """Revoking a certificate refuses its next request everywhere, even on a connection that is already open."""
    from dms import pki, tls
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    svc = pki.issue(ca, "svc", role="service")
    user = pki.issue(ca, "bob", role="user")
    make_file(tmp_path / "src" / "ok.bin", 1000)
    (tmp_path / "dst").mkdir()
    cfg = tls.TlsConfig(cert=svc.cert, key=svc.key, ca=pki.ca_cert_path(ca), crl=pki.crl_path(ca))
    source = serve(make_source_server(tmp_path / "src", tls=cfg))
    dmts = serve(make_dmts_server(tmp_path / "dst", tls=cfg))
    app = api.create_app({"DB": str(tmp_path / "api.sqlite"), "EVENT_LOG": "", "CERT": str(svc.cert),
                          "KEY": str(svc.key), "CA": str(pki.ca_cert_path(ca)), "CRL": str(pki.crl_path(ca))})
    api_srv = serve(api.make_api_server(app, host="127.0.0.1", port=0, ssl_context=api.server_ssl_context(app.config)))
    ctx = tls.client_context(cert=user.cert, key=user.key, ca=pki.ca_cert_path(ca))
    open_conn = http.client.HTTPSConnection("localhost", source.port, context=ctx, timeout=30)
    try:
        open_conn.request("GET", "/ok.bin")
        resp = open_conn.getresponse()
        assert resp.status == 200 and len(resp.read()) == 1000
        assert request(dmts.port, "GET", "/nothing", ctx)[0] == 404  # through the check, then not found
        assert request(api_srv.port, "GET", "/transfers", ctx)[0] == 200
        time.sleep(0.01)  # a distinct CRL mtime even on coarse clocks
        pki.revoke(ca, "bob")
        for port, path in ((source.port, "/ok.bin"), (dmts.port, "/nothing"), (api_srv.port, "/transfers")):
            status, body = request(port, "GET", path, ctx)
            assert status == 403 and f"revoked (serial {user.serial:#x}" in body, body
        open_conn.request("GET", "/ok.bin")
        resp = open_conn.getresponse()
        assert resp.status == 403 and "revoked" in resp.read().decode()
    finally:
        open_conn.close()
        app.extensions["dms"].shutdown()
