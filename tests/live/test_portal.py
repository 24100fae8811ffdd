"""The portal API through Flask's test client and through a real server, with the VMM assigning."""
from __future__ import annotations

import random
import socket
import threading

import pytest
import requests
import simpy
from werkzeug.serving import make_server

from core.config import CloudConfig, Config, PolicyConfig, PoolConfig
from live.portal import create_app
from live.settings import Settings
from live.store import open_store
from live.usage_log import UsageLog
from live.vmm import Vmm, VmmOptions
from twin.cloud import SimCloud, SimCloudSpec


@pytest.fixture
def setup(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    pools = (PoolConfig(name="mantid", min_ready=1, max_total=5),)
    settings = Settings(owner_id="o", store_url=url, log_dir=tmp_path / "logs", pools=pools, policy=PolicyConfig(),
                        vmm=VmmOptions())
    store = open_store(url)
    clock = [1000.0]
    app = create_app(settings, store=store, clock=lambda: clock[0])
    env = simpy.Environment()
    cloud = SimCloud(env, SimCloudSpec(name="a", boot_median_s=5, boot_sigma=0.01, boot_failure_rate=0),
                     random.Random(1))
    vmm = Vmm(store=store, clouds={"a": cloud}, config=Config(pools=pools, clouds=(CloudConfig(name="a"),)),
              owner_id="o", log=UsageLog(tmp_path / "logs", {}), options=VmmOptions())

    def tick(t):
        clock[0] = 1000.0 + t
        if t > env.now:
            env.run(until=t)
        vmm.run_pass(clock[0])

    yield app, store, tick
    store.close()


def test_request_poll_heartbeat_release(setup):
    app, store, tick = setup
    c = app.test_client()
    tick(0)
    tick(10)
    r = c.post("/api/requests", json={"pool": "mantid", "user": "alice"})
    assert r.status_code == 201
    rid = r.get_json()["id"]
    assert c.get(f"/api/requests/{rid}").get_json()["state"] == "pending"
    tick(11)
    got = c.get(f"/api/requests/{rid}").get_json()
    assert got["state"] == "assigned" and got["vm"] and got["cloud"] == "a" and got["cloud_id"]
    hb = c.post(f"/api/vms/{got['vm']}/heartbeat", json={"cpu_percent": 85.0, "io_bytes_per_s": 0,
                                                         "last_input_at": 1005})
    assert hb.status_code == 200
    row = store.vm(got["vm"])
    assert row.last_busy_at == 1011 and row.last_input_at == 1005
    pools = c.get("/api/pools").get_json()["pools"]
    assert pools[0]["name"] == "mantid" and pools[0]["load"]["allocated"] == 1
    assert c.post(f"/api/requests/{rid}/release").get_json()["state"] == "released"
    assert store.vm(got["vm"]).state == "reclaiming"


@pytest.mark.parametrize("body, field", [
    ({"pool": "nope", "user": "a"}, "pool"),
    ({"pool": "mantid"}, "user"),
    ({"pool": "mantid", "user": "a b"}, "user"),
    ({"pool": "mantid", "user": "a", "extra": 1}, "extra"),
    ([1, 2], "body"),
])
def test_bad_requests_are_400_naming_the_field(setup, body, field):
    app, store, _ = setup
    r = app.test_client().post("/api/requests", json=body)
    assert r.status_code == 400 and field in r.get_json()["error"]
    assert store.requests() == []  # nothing half-written


def test_bad_heartbeats_and_unknown_ids(setup):
    app, _, _ = setup
    c = app.test_client()
    assert c.post("/api/vms/vm-x/heartbeat", json={"cpu_percent": "high", "io_bytes_per_s": 0}).status_code == 400
    assert c.post("/api/vms/vm-x/heartbeat", json={"cpu_percent": -1, "io_bytes_per_s": 0}).status_code == 400
    assert c.post("/api/vms/vm-x/heartbeat", json={"cpu_percent": 1, "io_bytes_per_s": 0}).status_code == 404
    assert c.get("/api/requests/req-nope").status_code == 404
    assert c.post("/api/requests/req-nope/release").status_code == 404


def test_through_a_real_server(setup):
    app, _, tick = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{port}/api"
        tick(0)
        tick(10)
        rid = requests.post(f"{base}/requests", json={"pool": "mantid", "user": "bob"}, timeout=5).json()["id"]
        tick(11)
        assert requests.get(f"{base}/requests/{rid}", timeout=5).json()["state"] == "assigned"
        assert requests.post(f"{base}/requests", data="not json", timeout=5).status_code == 400
    finally:
        server.shutdown()
        t.join()
