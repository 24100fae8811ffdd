"""The VMM pass over simulated clouds (twin.cloud.SimCloud): reconcile, crash repair, leaks, failover, logs."""
from __future__ import annotations

import json
import random

import pytest
import simpy

from core.config import CloudConfig, Config, PolicyConfig, PoolConfig
from core.events import parse_lines
from core.ports import OWNER_TAG, POOL_TAG, VM_TAG, CloudError
from live.store import open_store
from live.usage_log import UsageLog
from live.vmm import Vmm, VmmOptions
from twin.cloud import SimCloud, SimCloudSpec

OWNER = "test-owner"


class Flaky:
    """A cloud whose launches can be made to fail (errors or quota), the rest passed through."""

    def __init__(self, inner):
        self.inner, self.name, self.fail, self.quota = inner, inner.name, False, False
        self.launches = 0

    def launch(self, *, pool, tags):
        if self.fail or self.quota:
            raise CloudError(f"{self.name}: refused", quota=self.quota)
        self.launches += 1
        return self.inner.launch(pool=pool, tags=tags)

    def terminate(self, *, vm_id):
        self.inner.terminate(vm_id=vm_id)

    def list_vms(self):
        return self.inner.list_vms()


class World:
    def __init__(self, tmp_path, *, min_ready=2, pools=None, options=None):
        self.env = simpy.Environment()
        rng = random.Random(7)
        self.sims = {n: SimCloud(self.env, SimCloudSpec(name=n, boot_median_s=10, boot_sigma=0.01,
                                                        boot_failure_rate=0.0), random.Random(rng.random()))
                     for n in ("a", "b")}
        self.clouds = {n: Flaky(c) for n, c in self.sims.items()}
        self.config = Config(
            pools=pools or (PoolConfig(name="p", min_ready=min_ready, max_total=10, idle_timeout_s=100, grace_s=10),),
            clouds=(CloudConfig(name="a", priority=0, quota=10, expected_boot_s=10),
                    CloudConfig(name="b", priority=1, quota=10, expected_boot_s=10)),
            policy=PolicyConfig(boot_timeout_s=300))
        self.url = f"sqlite:///{tmp_path / 'live.db'}"
        self.logdir = tmp_path / "logs"
        self.options = options or VmmOptions(request_timeout_s=30, load_every_s=0)
        self.store = open_store(self.url)
        self.vmm = self.new_vmm()

    def new_vmm(self):
        """A fresh VMM process over the same store and clouds (what a restart after a crash sees)."""
        log = UsageLog(self.logdir, {"scenario": "test", "clouds": {}, "pools": ["p"]})
        return Vmm(store=self.store, clouds=self.clouds, config=self.config, owner_id=OWNER, log=log,
                   options=self.options)

    def tick(self, t):
        if t > self.env.now:
            self.env.run(until=t)
        return self.vmm.run_pass(1000.0 + t)

    def states(self):
        out = {}
        for r in self.store.vms():
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def events(self):
        lines = []
        for f in sorted(self.logdir.glob("*.jsonl")):
            lines += f.read_text().splitlines()
        return parse_lines(lines, source="log")


def test_reserve_boots_and_a_request_is_assigned(tmp_path):
    w = World(tmp_path)
    w.tick(0)
    assert w.states() == {"booting": 2}
    assert all(r.cloud == "a" for r in w.store.vms())  # priority 0 first
    w.tick(20)
    assert w.states() == {"ready": 2}
    req = w.store.create_request(pool="p", user="alice", now=1021)
    w.tick(22)
    assert w.store.request(req).state == "assigned"
    assert w.states() == {"allocated": 1, "ready": 1, "booting": 1}  # the reserve is replenished
    kinds = [e.kind for e in w.events()]
    for k in ("run", "launch", "ready", "request", "assign", "load"):
        assert k in kinds
    ready = [e for e in w.events() if e.kind == "ready"]
    assert all(e.details["boot_s"] == pytest.approx(20) for e in ready)
    assert w.store.samples(since=0)["a"][0].kind == "api"


def test_each_cloud_is_listed_once_per_pass(tmp_path):
    w = World(tmp_path, min_ready=0)
    calls = {"a": 0, "b": 0}
    for n, c in w.clouds.items():
        inner = c.list_vms
        c.list_vms = lambda n=n, inner=inner: (calls.__setitem__(n, calls[n] + 1), inner())[1]
    for i in range(5):
        w.tick(i)
    assert calls == {"a": 5, "b": 5}


def test_a_crash_between_launch_and_record_is_adopted_by_its_tag(tmp_path):
    w = World(tmp_path, min_ready=0)
    vm = w.store.intend_launch(pool="p", cloud="a", now=1000)
    cid = w.clouds["a"].launch(pool="p", tags={OWNER_TAG: OWNER, POOL_TAG: "p", VM_TAG: vm})
    # ... the process dies here; a new one starts
    w.vmm = w.new_vmm()
    w.tick(1)
    row = w.store.vm(vm)
    assert (row.state, row.cloud_id) == ("booting", cid)
    w.tick(15)
    assert w.store.vm(vm).state == "ready"


def test_an_intent_with_no_vm_is_gone_after_the_timeout(tmp_path):
    w = World(tmp_path, min_ready=0)
    vm = w.store.intend_launch(pool="p", cloud="a", now=1000)
    w.tick(10)
    assert w.store.vm(vm).state == "requested"
    w.tick(31)
    assert w.store.vm(vm).state == "gone"


def test_an_unknown_tagged_vm_is_deleted_on_the_second_sighting_only(tmp_path):
    w = World(tmp_path, min_ready=0)
    leak = w.sims["b"].launch(pool="p", tags={OWNER_TAG: OWNER, VM_TAG: "vm-unknown"})
    other = w.sims["b"].launch(pool="p", tags={OWNER_TAG: "someone-else", VM_TAG: "vm-x"})
    assert w.tick(1).leaks_deleted == 0
    assert {v.id for v in w.sims["b"].list_vms()} == {leak, other}
    assert w.tick(2).leaks_deleted == 1
    assert {v.id for v in w.sims["b"].list_vms()} == {other}  # not ours: never touched
    assert any(e.kind == "terminate" and e.details["reason"] == "leak" for e in w.events())


def test_a_store_vm_missing_from_its_cloud_is_gone(tmp_path):
    w = World(tmp_path, min_ready=1)
    w.tick(0)
    w.tick(20)
    (row,) = w.store.vms()
    w.sims["a"].terminate(vm_id=row.cloud_id)  # deleted behind daaas's back
    w.tick(21)
    assert w.store.vm(row.id).state == "gone"
    assert any(e.kind == "gone" and e.vm == row.id for e in w.events())
    assert w.states() == {"booting": 1}  # and the reserve is rebuilt in the same pass


def test_a_refused_launch_fails_over_in_the_same_pass(tmp_path):
    w = World(tmp_path, min_ready=3)
    w.clouds["a"].fail = True
    w.tick(0)
    rows = w.store.vms()
    assert sorted(r.cloud for r in rows) == ["b", "b", "b"]
    assert w.clouds["a"].launches == 0
    failed = [e for e in w.events() if e.kind == "launch_failed"]
    assert len(failed) == 1  # the refusing cloud is tried once per pass, not once per launch
    gone = w.store.vms(include_gone=True)
    assert sum(r.state == "gone" and r.reason == "launch_failed" for r in gone) == 1


def test_a_quota_refusal_fails_over_too(tmp_path):
    w = World(tmp_path, min_ready=2)
    w.clouds["a"].quota = True
    w.tick(0)
    assert sorted(r.cloud for r in w.store.vms()) == ["b", "b"]
    assert [e.details["quota"] for e in w.events() if e.kind == "launch_failed"] == [True]


def test_a_listing_failure_changes_nothing_on_that_cloud(tmp_path):
    w = World(tmp_path, min_ready=1)
    w.tick(0)
    w.tick(20)

    def boom():
        raise CloudError("a: unreachable")

    w.clouds["a"].list_vms = boom
    res = w.tick(21)
    assert res.listed["a"] is None
    assert w.states() == {"ready": 1}
    assert any(e.kind == "api_error" and e.details["call"] == "list" for e in w.events())


def test_release_terminates_and_the_vm_goes(tmp_path):
    w = World(tmp_path, min_ready=1)
    w.tick(0)
    w.tick(20)
    req = w.store.create_request(pool="p", user="alice", now=1020)
    w.tick(21)
    vm = w.store.request(req).vm_id
    w.store.release(req, now=1030)
    w.tick(31)  # terminate sent
    w.tick(32)  # the cloud lists it no more
    assert w.store.vm(vm).state == "gone"
    assert [t.to_state for t in w.store.transitions(vm)] == ["requested", "booting", "ready", "allocated",
                                                             "reclaiming", "gone"]
    logged = [(e.kind, e.t, e.user, e.details.get("reason")) for e in w.events() if e.vm == vm]
    assert ("release", 1030, "alice", None) in logged and ("terminate", 1031, "alice", "released") in logged


def test_an_idle_vm_is_warned_then_reclaimed_but_a_busy_one_is_kept(tmp_path):
    w = World(tmp_path, min_ready=2)
    w.tick(0)
    w.tick(20)
    idle = w.store.create_request(pool="p", user="idle", now=1020)
    busy = w.store.create_request(pool="p", user="busy", now=1020)
    w.tick(21)
    busy_vm = w.store.request(busy).vm_id
    for t in range(30, 200, 10):
        w.store.heartbeat(busy_vm, now=1000 + t, cpu_percent=90, io_bytes_per_s=0, last_input_at=None, busy=True)
        w.tick(t)
    assert w.store.request(idle).state == "ended"
    assert w.store.request(busy).state == "assigned"
    kinds = [(e.kind, e.user) for e in w.events()]
    assert ("warn", "idle") in kinds and ("terminate", "idle") in kinds
    assert ("warn", "busy") not in kinds


def test_usage_log_feeds_the_report(tmp_path):
    from reports.render import write_outputs

    w = World(tmp_path)
    w.tick(0)
    w.tick(20)
    req = w.store.create_request(pool="p", user="alice", now=1020)
    w.tick(21)
    w.store.release(req, now=1040)
    w.tick(41)
    w.tick(42)
    write_outputs(w.events(), tmp_path / "out", title="live")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["requests"] == 1


def test_a_restarted_vmm_keeps_a_clouds_backoff_and_its_length(tmp_path):
    """The policy's view of the clouds is in the store: a new VMM process does not trust a failing
    cloud again, and a failed probe after the restart backs off longer, not from the start."""
    w = World(tmp_path, min_ready=3, options=VmmOptions(request_timeout_s=30, load_every_s=0))
    w.clouds["a"].fail = True

    def unreachable():
        raise CloudError("a: unreachable")

    w.clouds["a"].list_vms = unreachable
    for t in range(8):  # failed calls, a pass after another, until "a" is backed off
        w.tick(t)
        if w.vmm.memory.clouds["a"].status == "backoff":
            break
    before = w.vmm.memory.clouds["a"]
    assert before.status == "backoff"
    assert w.store.cloud_health()["a"] == before

    w.vmm = w.new_vmm()  # a crash and restart: a fresh process over the same store
    w.tick(4)
    assert w.vmm.memory.clouds["a"] == before  # still backed off, same until
    assert all(r.cloud == "b" for r in w.store.vms())

    # The backoff ends; the probe fails: the next backoff grows from the saved length.
    w.tick(before.until - 1000.0 + 1)
    assert w.vmm.memory.clouds["a"].status == "probing"
    w.vmm = w.new_vmm()
    w.tick(before.until - 1000.0 + 2)
    after = w.vmm.memory.clouds["a"]
    assert after.status == "backoff" and after.backoff_s > before.backoff_s
