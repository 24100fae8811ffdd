"""core.allocation: which ready VM each waiting request gets."""
from __future__ import annotations

import pytest

from core.actions import Assign, Launch, Terminate
from core.allocation import assign_requests
from core.config import CloudConfig, Config, MaintenanceWindow, PolicyConfig, PoolConfig
from core.policy import decide
from core.snapshot import Request, Snapshot, Vm, VmState

CONFIG = Config(pools=(PoolConfig("p", min_ready=0, max_ready_age_s=1e9), PoolConfig("q", min_ready=0)),
                clouds=(CloudConfig("home", region="home"), CloudConfig("eu", region="eu"),
                        CloudConfig("us", region="us")),
                policy=PolicyConfig(latency_ms=(("home", "eu", 20.0),)))


def vm(name, cloud="home", pool="p", ready_at=0.0):
    return Vm(id=name, pool=pool, cloud=cloud, state=VmState.READY, created_at=0.0, ready_at=ready_at)


def req(name, at, pool="p", location="home"):
    return Request(id=name, pool=pool, user=f"u-{name}", requested_at=at, location=location)


def pairs(actions):
    return [(a.request, a.vm) for a in actions]


@pytest.mark.parametrize("case, vms, requests, unavailable, going_down, expected", [
    ("oldest request first", [vm("v1")], [req("late", 20.0), req("early", 10.0)], (), {}, [("early", "v1")]),
    ("ties broken by request id", [vm("v1")], [req("b", 10.0), req("a", 10.0)], (), {}, [("a", "v1")]),
    ("never the same VM twice", [vm("v1"), vm("v2")], [req("a", 1.0), req("b", 2.0), req("c", 3.0)], (), {},
     [("a", "v1"), ("b", "v2")]),
    ("nearest VM to the user", [vm("far", "us"), vm("mid", "eu"), vm("near", "home")], [req("a", 1.0)], (), {},
     [("a", "near")]),
    ("the latency table decides between remote clouds", [vm("far", "us"), vm("mid", "eu")], [req("a", 1.0)], (),
     {}, [("a", "mid")]),
    ("a user elsewhere gets the VM near them", [vm("h", "home"), vm("u", "us")], [req("a", 1.0, location="us")],
     (), {}, [("a", "u")]),
    ("equally near: the VM waiting longest", [vm("young", ready_at=50.0), vm("old", ready_at=5.0)],
     [req("a", 1.0)], (), {}, [("a", "old")]),
    ("avoid a cloud about to go down", [vm("doomed", "home"), vm("safe", "us")], [req("a", 1.0)], (),
     {"home": 100.0}, [("a", "safe")]),
    ("unless nothing else is ready", [vm("doomed", "home")], [req("a", 1.0)], (), {"home": 100.0},
     [("a", "doomed")]),
    ("a VM terminated this pass is never assigned", [vm("dead"), vm("alive", "us")], [req("a", 1.0)], {"dead"}, {},
     [("a", "alive")]),
    ("only VMs of the request's pool", [vm("v1", pool="q")], [req("a", 1.0)], (), {}, []),
    ("only ready VMs", [Vm(id="b", pool="p", cloud="home", state=VmState.BOOTING, created_at=0.0)],
     [req("a", 1.0)], (), {}, []),
])
def test_assign_requests(case, vms, requests, unavailable, going_down, expected):
    snap = Snapshot(now=100.0, vms=tuple(vms), requests=tuple(requests))
    got = assign_requests(snap, CONFIG, set(unavailable), going_down)
    assert pairs(got) == expected, case
    assert all(isinstance(a, Assign) and a.user == f"u-{a.request}" and a.pool == "p" for a in got)


def test_decide_never_assigns_a_vm_it_terminates():
    config = Config(pools=(PoolConfig("p", min_ready=0, max_ready_age_s=100.0),), clouds=(CloudConfig("c"),))
    snap = Snapshot(now=1000.0, vms=(vm("stale", "c", ready_at=0.0),), requests=(req("a", 900.0),))
    d = decide(snap, config)
    assert d.actions == (Terminate("stale", "recycle"), Launch("p", "c", reason="waiting"))


def test_decide_assigns_on_a_cloud_in_maintenance_lead_only_as_a_last_resort():
    config = Config(pools=(PoolConfig("p", min_ready=0),),
                    clouds=(CloudConfig("a", maintenance=(MaintenanceWindow(2000.0, 3000.0),)), CloudConfig("b")))
    snap = Snapshot(now=1500.0, vms=(vm("va", "a"), vm("vb", "b")), requests=(req("r1", 1.0), req("r2", 2.0)))
    assert pairs(a for a in decide(snap, config).actions if isinstance(a, Assign)) == [("r1", "vb"), ("r2", "va")]
