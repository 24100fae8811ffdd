"""The DMS web API: request validation and authentication through Flask's test client, then whole
transfers through a real mutual-TLS API server driving a real DMTS that pulls from a real source
(all on loopback)."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from core import events
from dms import api, orchestrator


def _cn_hook(environ):
    return environ.get("HTTP_X_TEST_CN")


@pytest.fixture
def app(tmp_path):
    a = api.create_app({"DB": str(tmp_path / "j.sqlite"), "EVENT_LOG": str(tmp_path / "ev.jsonl"),
                        "ALLOWED_SUBJECTS": ["alice", "daaas-*"], "PEER_SUBJECT_HOOK": _cn_hook})
    yield a
    a.extensions["dms"].shutdown()


def _post(c, body, cn="alice"):
    return c.post("/transfers", json=body, headers={"X-Test-CN": cn} if cn else {})


GOOD = {"source": "https://127.0.0.1:1/data", "destination": "https://127.0.0.1:2/in", "directory": "d"}


@pytest.mark.parametrize("change, field", [
    ({"source": None}, "source"),
    ({"source": "ftp://x/y"}, "source"),
    ({"destination": "not a url"}, "destination"),
    ({"paths": ["a"]}, "paths"),  # both paths and directory
    ({"directory": "../etc"}, "directory"),
    ({"directory": "/abs"}, "directory"),
    ({"adapter": "biggest_first"}, "adapter"),
    ({"streams": 0}, "streams"),
    ({"streams": "4"}, "streams"),
    ({"parallel_files": 10_000}, "parallel_files"),
    ({"colour": "blue"}, "colour"),
    ({"verify_checksum": "yes"}, "verify_checksum"),
])
def test_bad_requests_name_the_field(app, change, field):
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = _post(app.test_client(), body)
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["field"] == field
    assert r.get_json()["error"]


def test_paths_must_be_relative_and_clean(app):
    c = app.test_client()
    body = {k: v for k, v in GOOD.items() if k != "directory"}
    for bad in ([], ["a/../../b"], ["/etc/passwd"], ["a", "a"], "a"):
        r = _post(c, {**body, "paths": bad})
        assert r.status_code == 400 and r.get_json()["field"] == "paths", (bad, r.get_json())


def test_not_json_is_400(app):
    r = app.test_client().post("/transfers", data="source=x", headers={"X-Test-CN": "alice"})
    assert r.status_code == 400 and r.get_json()["field"] == "body"


def test_authentication(app):
    c = app.test_client()
    r = _post(c, GOOD, cn=None)
    assert r.status_code == 401 and "certificate" in r.get_json()["error"]
    r = _post(c, GOOD, cn="mallory")
    assert r.status_code == 403 and "mallory" in r.get_json()["error"]
    assert c.get("/transfers", headers={"X-Test-CN": "mallory"}).status_code == 403
    assert c.get("/healthz").status_code == 200


def test_unknown_transfer_is_404(app):
    c = app.test_client()
    r = c.get("/transfers/nope", headers={"X-Test-CN": "alice"})
    assert r.status_code == 404 and r.get_json()["field"] == "id"
    assert c.delete("/transfers/nope", headers={"X-Test-CN": "alice"}).status_code == 404


def test_unreachable_source_is_502_naming_source(app, free_port):
    body = {**GOOD, "source": f"https://127.0.0.1:{free_port()}/data"}
    r = _post(app.test_client(), body)
    assert r.status_code == 502 and r.get_json()["field"] == "source"


def test_config_file_layers_and_bad_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("max_streams: 8\nparallel_files: 2\n")
    cfg = api.load_config({"PARALLEL_FILES": 3}, config_file=f)
    assert cfg["MAX_STREAMS"] == 8 and cfg["PARALLEL_FILES"] == 3 and cfg["COPY_TIMEOUT"] == 120.0
    f.write_text("max_stream: 8\n")
    with pytest.raises(api.ConfigError, match="max_stream"):
        api.load_config({}, config_file=f)
    with pytest.raises(api.ConfigError, match="cannot read"):
        api.load_config({}, config_file=tmp_path / "missing.yaml")


# ---- real servers ------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path, serve, server_tls, service_client_ctx, make_file):
    """A source over `src/` and a DMTS into `dst/`, both mutual TLS, on loopback."""
    from dms.dmts import make_dmts_server
    from dms.source import make_source_server
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    source = serve(make_source_server(src, tls=server_tls))
    dmts = serve(make_dmts_server(dst, tls=server_tls, client_tls=service_client_ctx))
    return {"src": src, "dst": dst, "source_url": f"https://127.0.0.1:{source.port}",
            "dmts_url": f"https://127.0.0.1:{dmts.port}", "source": source, "dmts": dmts}


@pytest.fixture
def api_config(tmp_path, service_cert, ca_cert, crl_file):
    return {"DB": str(tmp_path / "journal.sqlite"), "EVENT_LOG": str(tmp_path / "events.jsonl"),
            "CERT": str(service_cert.cert), "KEY": str(service_cert.key), "CA": str(ca_cert),
            "CRL": str(crl_file), "ALLOWED_SUBJECTS": ["alice"], "COPY_TIMEOUT": 30.0}


@pytest.fixture
def api_server(api_config, serve):
    app = api.create_app(api_config)
    srv = serve(api.make_api_server(app, host="127.0.0.1", port=0,
                                    ssl_context=api.server_ssl_context(app.config)))
    yield app, f"https://127.0.0.1:{srv.port}"
    app.extensions["dms"].shutdown()


def _wait(session, url, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = session.get(url, timeout=10).json()
        if body["state"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"transfer did not finish: {body}")


def _session(cert, ca):
    s = requests.Session()
    s.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment replaces `verify`
    s.cert = (str(cert.cert), str(cert.key)) if cert else None
    s.verify = str(ca)
    return s


def test_directory_transfer_small_first_over_real_tls(world, api_server, user_cert, ca_cert, make_file):
    sizes = {"d/big.bin": 3_000_000, "d/mid.bin": 300_000, "d/s1.txt": 10, "d/sub/s2.txt": 2000,
             "d/sub/deep/m.bin": 70_000, "d/s3.txt": 500}
    data = {p: make_file(world["src"] / p, n, seed=i) for i, (p, n) in enumerate(sizes.items())}
    make_file(world["src"] / "other" / "x.bin", 1000)
    app, base = api_server
    s = _session(user_cert, ca_cert)
    r = s.post(f"{base}/transfers", json={"source": world["source_url"], "destination": world["dmts_url"],
                                          "directory": "d", "adapter": "small_first", "streams": 2,
                                          "parallel_files": 1}, timeout=30)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert r.headers["Location"] == f"/transfers/{tid}"
    body = _wait(s, f"{base}/transfers/{tid}")
    assert body["state"] == "done", body
    assert body["files_done"] == body["files_total"] == len(sizes)
    assert body["bytes_done"] == body["bytes_total"] == sum(sizes.values())
    assert [f["path"] for f in body["files"]] == sorted(sizes, key=lambda p: (sizes[p], p))
    brief = s.get(f"{base}/transfers/{tid}?files=0", timeout=10).json()
    assert "files" not in brief and brief["files_done"] == len(sizes)
    assert s.get(f"{base}/transfers/{tid}?files=x", timeout=10).status_code == 400
    for p, b in data.items():
        assert (world["dst"] / p).read_bytes() == b
    assert not (world["dst"] / "other").exists()
    # What the destination received first: with one file at a time, the files appeared under their
    # final names (their inode change time, set by the rename) in the small-first order. The kernel's
    # file times are coarse (a few ms): two quick renames may share one, so ties are allowed here and
    # the log, written as each file is done, gives the strict order.
    small_first = sorted(sizes, key=lambda p: (sizes[p], p))
    ctimes = [(world["dst"] / p).stat().st_ctime_ns for p in small_first]
    assert ctimes == sorted(ctimes), list(zip(small_first, ctimes, strict=True))
    evs = [json.loads(line) for line in Path(app.config["EVENT_LOG"]).read_text().splitlines()]
    assert [e["details"]["path"] for e in evs if e["kind"] == "transfer_file_done"] == small_first
    steps = [e["kind"] for e in evs]
    assert steps[0] == "transfer_submit" and steps[-1] == "transfer_done"
    assert steps.count("transfer_file_done") == len(sizes)
    assert all(e["user"] == "alice" and e["details"]["transfer"] == evs[0]["details"]["transfer"] for e in evs)
    # The common schema's parser reads the DMS's log as it reads the VMM's.
    parsed = events.parse_lines(Path(app.config["EVENT_LOG"]).read_text().splitlines(), source="dms log")
    assert [e.kind for e in parsed] == steps


def test_paths_current_directory_and_missing_paths(world, api_server, user_cert, ca_cert, make_file):
    make_file(world["src"] / "a" / "one.bin", 1234, seed=1)
    make_file(world["src"] / "a" / "two.bin", 99, seed=2)
    make_file(world["src"] / "a" / "b" / "three.bin", 5, seed=3)
    _, base = api_server
    s = _session(user_cert, ca_cert)
    common = {"source": world["source_url"], "destination": world["dmts_url"]}
    r = s.post(f"{base}/transfers", json={**common, "directory": "a", "adapter": "current_directory"}, timeout=30)
    assert r.status_code == 201, r.text
    body = _wait(s, f"{base}/transfers/{r.json()['id']}")
    assert body["state"] == "done" and [f["path"] for f in body["files"]] == ["a/two.bin", "a/one.bin"]
    assert not (world["dst"] / "a" / "b").exists()
    r = s.post(f"{base}/transfers", json={**common, "paths": ["a/b/three.bin"]}, timeout=30)
    assert r.status_code == 201, r.text
    assert _wait(s, f"{base}/transfers/{r.json()['id']}")["state"] == "done"
    assert (world["dst"] / "a" / "b" / "three.bin").stat().st_size == 5
    r = s.post(f"{base}/transfers", json={**common, "paths": ["a/nope.bin"]}, timeout=30)
    assert r.status_code == 404 and r.json()["field"] == "paths" and "a/nope.bin" in r.json()["error"]
    r = s.post(f"{base}/transfers", json={**common, "directory": "missing"}, timeout=30)
    assert r.status_code == 404 and r.json()["field"] == "directory"
    done = s.get(f"{base}/transfers", timeout=10).json()["transfers"]
    r = s.delete(f"{base}/transfers/{done[0]['id']}", timeout=10)
    assert r.status_code == 409 and r.json()["field"] == "id"


def test_tls_rejections(world, api_server, ca_cert, user_cert, other_user_cert, foreign_cert,
                        selfsigned_cert, expired_cert, revoked_cert):
    _, base = api_server
    body = {"source": world["source_url"], "destination": world["dmts_url"], "directory": "x"}
    r = _session(None, ca_cert).post(f"{base}/transfers", json=body, timeout=10)
    assert r.status_code == 401 and r.json()["field"] == "client certificate"
    r = _session(other_user_cert, ca_cert).post(f"{base}/transfers", json=body, timeout=10)
    assert r.status_code == 403 and "mallory" in r.json()["error"]
    # Certificates that do not verify pass the handshake and are refused in HTTP, naming the reason
    # (every kind on every endpoint: tests/dms/test_security.py).
    for bad, reason in ((foreign_cert, "not issued by the daaas CA"), (selfsigned_cert, "self-signed"),
                        (expired_cert, "expired on"), (revoked_cert, "revoked (serial")):
        r = _session(bad, ca_cert).post(f"{base}/transfers", json=body, timeout=10)
        assert r.status_code == 403 and reason in r.json()["error"], r.text
        assert r.json()["field"] == "client certificate"
    assert _session(user_cert, ca_cert).get(f"{base}/transfers", timeout=10).json() == {"transfers": []}


class SlowProxy:
    """A TCP relay that passes at most `rate` bytes/s from the upstream: makes a transfer slow enough to cancel."""

    def __init__(self, upstream_port: int, rate: int):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.upstream, self.rate = upstream_port, rate
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            u = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(c, u, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, self.rate), daemon=True).start()

    def _pipe(self, a, b, rate):
        try:
            while not self.stop.is_set():
                data = a.recv(16384)
                if not data:
                    break
                b.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def test_cancel_leaves_no_partial_file(world, api_server, user_cert, ca_cert, make_file):
    make_file(world["src"] / "c" / "large.bin", 40_000_000)
    proxy = SlowProxy(world["source"].port, rate=2_000_000)
    try:
        _, base = api_server
        s = _session(user_cert, ca_cert)
        r = s.post(f"{base}/transfers", json={"source": f"https://127.0.0.1:{proxy.port}",
                                              "destination": world["dmts_url"], "paths": ["c/large.bin"],
                                              "streams": 2}, timeout=30)
        assert r.status_code == 201, r.text
        url = f"{base}/transfers/{r.json()['id']}"
        deadline = time.monotonic() + 20
        while s.get(url, timeout=10).json()["files"][0]["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        assert s.delete(url, timeout=10).status_code == 202
        body = _wait(s, url)
        assert body["state"] == "cancelled" and body["files"][0]["state"] == "cancelled"
        # The DMTS notices its client is gone and removes the partial file (temporary name included).
        deadline = time.monotonic() + 20
        while any(p.is_file() for p in world["dst"].rglob("*")):
            assert time.monotonic() < deadline, list(world["dst"].rglob("*"))
            time.sleep(0.1)
        assert s.delete(url, timeout=10).status_code == 409
    finally:
        proxy.close()


def test_restarted_api_reports_finished_and_interrupted(world, api_config, user_cert, make_file):
    make_file(world["src"] / "r" / "f.bin", 10_000)
    cfg = {**api_config, "PEER_SUBJECT_HOOK": lambda environ: "alice"}
    app = api.create_app(cfg)
    c = app.test_client()
    r = c.post("/transfers", json={"source": world["source_url"], "destination": world["dmts_url"],
                                   "directory": "r"})
    assert r.status_code == 201, r.get_json()
    tid = r.get_json()["id"]
    assert app.extensions["dms"].wait(tid, 30).state == "done"
    app.extensions["dms"].shutdown()
    # A transfer the journal saw running when the API stopped.
    store = orchestrator.Store(cfg["DB"])
    req = orchestrator.TransferRequest(source="https://a", destination="https://b", paths=("x",))
    ghost = orchestrator.Transfer(id="ghost", request=req,
                                  user="alice", created=time.time(), state=orchestrator.TransferState.RUNNING,
                                  files=[orchestrator.FileProgress(path="x", size=5, state="running")])
    store.save(ghost)
    store.close()
    app2 = api.create_app(cfg)
    c2 = app2.test_client()
    body = c2.get(f"/transfers/{tid}").get_json()
    assert body["state"] == "done" and body["files_done"] == 1 and body["bytes_done"] == 10_000
    body = c2.get("/transfers/ghost").get_json()
    assert body["state"] == "failed" and "interrupted" in body["error"]
    app2.extensions["dms"].shutdown()
