"""Real WLCG peers drive the daaas DMTS: davix-cp (pull mode) and gfal2 (4 streams, ADLER32), and the
DMTS pulls from nginx that requires client certificates. Files must arrive byte-identical."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

from dms.dmts import make_dmts_server
from dms.source import make_source_server


def _need(binary: str) -> str:
    path = shutil.which(binary)
    assert path, f"{binary} not found: install the Debian packages in .ci/apt-packages.txt"
    return path


@pytest.fixture
def env(tmp_path, server_tls, service_client_ctx, serve, make_file):
    src_root, dst_root = tmp_path / "archive", tmp_path / "dest"
    dst_root.mkdir()
    data = make_file(src_root / "run1" / "big.dat", 3 * 1024 * 1024 + 17, seed=1)
    source = serve(make_source_server(src_root, tls=server_tls))
    dmts = serve(make_dmts_server(dst_root, tls=server_tls, client_tls=service_client_ctx))
    return {"src_root": src_root, "dst_root": dst_root, "data": data, "source": source, "dmts": dmts}


def test_davix_cp_pull_mode(env, user_cert, capath):
    davix = _need("davix-cp")
    src = f"https://localhost:{env['source'].port}/run1/big.dat"
    dst = f"https://localhost:{env['dmts'].port}/in/big.dat"
    out = subprocess.run([davix, "--copy-mode", "pull", "--cert", str(user_cert.cert), "--key", str(user_cert.key),
                          "--capath", str(capath), src, dst], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (env["dst_root"] / "in" / "big.dat").read_bytes() == env["data"]
    statuses = env["dmts"].server.transfer_status()
    assert [s["state"] for s in statuses] == ["succeeded"]  # a real third-party pull, not a streamed copy


GFAL_SCRIPT = textwrap.dedent("""
    import sys, gfal2
    src, dst = sys.argv[1], sys.argv[2]
    ctx = gfal2.creat_context()
    ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_REMOTE_COPY", True)
    ctx.set_opt_string("HTTP PLUGIN", "DEFAULT_COPY_MODE", "3rd pull")
    ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_FALLBACK_TPC_COPY", False)
    ctx.set_opt_boolean("HTTP PLUGIN", "RETRIEVE_BEARER_TOKEN", False)
    params = ctx.transfer_parameters()
    params.nbstreams = 4
    params.overwrite = True
    params.timeout = 60
    params.set_checksum(gfal2.checksum_mode.both, "ADLER32", "")
    ctx.filecopy(params, src, dst)
    print("DST_ADLER32", ctx.checksum(dst, "ADLER32"))
""")


def test_gfal2_filecopy_four_streams_adler32(env, user_cert, capath, tmp_path):
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import gfal2"], capture_output=True, text=True)
    assert probe.returncode == 0, f"gfal2 is not importable from {python}: {probe.stderr}"
    script = tmp_path / "gfal_copy.py"
    script.write_text(GFAL_SCRIPT)
    src = f"davs://localhost:{env['source'].port}/run1/big.dat"
    dst = f"davs://localhost:{env['dmts'].port}/in/gfal.dat"
    e = dict(os.environ, X509_USER_CERT=str(user_cert.cert), X509_USER_KEY=str(user_cert.key),
             X509_CERT_DIR=str(capath))
    out = subprocess.run([python, str(script), src, dst], capture_output=True, text=True, timeout=90, env=e)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (env["dst_root"] / "in" / "gfal.dat").read_bytes() == env["data"]
    import zlib
    assert f"DST_ADLER32 {zlib.adler32(env['data']):08x}" in out.stdout
    copies = [s for s in env["dmts"].server.transfer_status() if s["state"] == "succeeded"]
    assert len(copies) == 1 and copies[0]["streams"] == 4


NGINX_CONF = """
daemon off;
user root;  # pytest temp directories are private to root: the worker must read them
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_crl {crl};
        ssl_verify_client on;
        root {root};
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path, host_cert, ca_cert, crl_file, free_port, make_file):
    binary = _need("nginx")
    d = tmp_path / "nginx"
    d.mkdir()
    root = tmp_path / "nginx-root"
    data = make_file(root / "data" / "blob.bin", 2 * 1024 * 1024 + 5, seed=7)
    port = free_port()
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port, cert=host_cert.cert, key=host_cert.key,
                                                    ca=ca_cert, crl=crl_file, root=root))
    proc = subprocess.Popen([binary, "-p", str(d), "-c", str(d / "nginx.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    import socket
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nginx did not start: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    yield {"port": port, "data": data, "dir": d}
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_dmts_pulls_from_nginx_with_client_certificates(nginx, tmp_path, server_tls, service_client_ctx, serve,
                                                        client_ctx):
    import http.client
    dst_root = tmp_path / "dest"
    dst_root.mkdir()
    dmts = serve(make_dmts_server(dst_root, tls=server_tls, client_tls=service_client_ctx))
    conn = http.client.HTTPSConnection("localhost", dmts.port, context=client_ctx(), timeout=60)
    expected = "sha-256:" + hashlib.sha256(nginx["data"]).hexdigest()
    conn.request("COPY", "/copy/blob.bin", headers={
        "Source": f"https://localhost:{nginx['port']}/data/blob.bin", "X-Number-Of-Streams": "3",
        "X-Daaas-Checksum": expected, "TransferHeaderX-Test-Token": "abc123"})
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 202, body
    assert body.rstrip().endswith("success: Created"), body
    assert (dst_root / "copy" / "blob.bin").read_bytes() == nginx["data"]
    log = (nginx["dir"] / "access.log").read_text()
    assert log.count(" 206 ") >= 3  # the three streams' Range GETs

    # nginx refuses a DMTS without a client certificate: the failure is reported, nothing is written.
    bare = serve(make_dmts_server(dst_root, tls=server_tls, client_tls=client_ctx(None)))
    conn = http.client.HTTPSConnection("localhost", bare.port, context=client_ctx(), timeout=60)
    conn.request("COPY", "/copy/refused.bin", headers={"Source": f"https://localhost:{nginx['port']}/data/blob.bin"})
    resp = conn.getresponse()
    body = resp.read().decode()
    assert "failure: source answered HEAD with 400" in body
    assert sorted(p.name for p in (dst_root / "copy").iterdir()) == ["blob.bin"]
