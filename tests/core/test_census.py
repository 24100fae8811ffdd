"""core.census: the counts a pass needs, kept from pass to pass. A census updated from the previous
one must equal a census counted afresh, whatever changed in between."""
from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from core.census import census_of
from core.config import CloudConfig, Config, PolicyConfig, PoolConfig
from core.dues import vm_due_times
from core.snapshot import Snapshot, Vm, VmState

POOLS = (PoolConfig("p", min_ready=1, max_total=50, idle_timeout_s=100.0, grace_s=10.0, max_age_s=1000.0,
                    max_ready_age_s=500.0),
         PoolConfig("q", min_ready=0, max_total=50, idle_timeout_s=300.0, grace_s=30.0, max_age_s=2000.0))
CLOUDS = (CloudConfig("a", expected_boot_s=20.0), CloudConfig("b", expected_boot_s=60.0))
CONFIG = Config(pools=POOLS, clouds=CLOUDS, policy=PolicyConfig(boot_timeout_s=300.0))


def vm(id, state=VmState.READY, pool="p", cloud="a", **kw) -> Vm:
    base = dict(created_at=0.0, ready_at=10.0 if state in (VmState.READY, VmState.ALLOCATED) else None,
                allocated_at=20.0 if state is VmState.ALLOCATED else None)
    base.update(kw)
    return Vm(id=id, pool=pool, cloud=cloud, state=state, **base)


def view(c) -> dict:
    """A census's contents, without empty entries (an updated census may keep emptied ones)."""
    return {
        "by_id": dict(c.by_id), "live": {k: v for k, v in c.live.items() if v},
        "cloud_live": {k: v for k, v in c.cloud_live.items() if v},
        "unallocated": {k: v for k, v in c.unallocated.items() if v},
        "ready": {k: dict(v) for k, v in c.ready.items() if v},
        "booting": {k: dict(v) for k, v in c.booting.items() if v},
        "dues": dict(c.dues), "overdue": set(c.overdue),
    }


def test_counts_of_one_snapshot():
    vms = (vm("r1"), vm("r2", cloud="b"), vm("b1", VmState.BOOTING), vm("x1", VmState.ALLOCATED, pool="q"),
           vm("g1", VmState.GONE), vm("t1", VmState.RECLAIMING, cloud="b"))
    c = census_of(Snapshot(now=30.0, vms=vms), CONFIG)
    assert dict(c.live) == {"p": 3, "q": 1}
    assert dict(c.cloud_live) == {"a": 3, "b": 1}
    assert dict(c.unallocated) == {("p", "a"): 2, ("p", "b"): 1}
    assert set(c.ready["p"]) == {"r1", "r2"}
    assert c.booting_ages("a") == [30.0] and c.booting_ages("b") == []
    assert set(c.by_id) == {v.id for v in vms}


@pytest.mark.parametrize("now, overdue", [
    (0.0, set()),
    (60.0 + 1e-6, {"b1"}),  # judged slow just after 3 x 20 s
    (120.0, {"b1", "x1"}),  # x1 idle since its allocation at 20: warned at 120
    (510.0, {"b1", "x1", "r1"}),  # r1 ready at 10: recycled at 510
])
def test_overdue_vms_are_those_whose_first_rule_fell_due(now, overdue):
    vms = (vm("r1"), vm("b1", VmState.BOOTING), vm("x1", VmState.ALLOCATED))
    assert set(census_of(Snapshot(now=now, vms=vms), CONFIG).overdue) == overdue


def brute_next_due(vms, after: float) -> float:
    pools = {p.name: p for p in POOLS}
    best = math.inf
    for v in vms:
        for t in vm_due_times(v, pools[v.pool], CONFIG):
            if t > after:
                best = min(best, t)
                break
    return best


def mutate(rng: random.Random, vms: dict[str, Vm], now: float, ids: list[int]) -> None:
    """One random change of the kind shells make between passes."""
    roll = rng.random()
    if roll < 0.3 or not vms:
        ids[0] += 1
        state = rng.choice([VmState.BOOTING, VmState.READY, VmState.ALLOCATED, VmState.REQUESTED])
        v = vm(f"v{ids[0]}", state, pool=rng.choice("pq"), cloud=rng.choice("ab"), created_at=now,
               ready_at=now if state is not VmState.BOOTING and state is not VmState.REQUESTED else None,
               allocated_at=now if state is VmState.ALLOCATED else None)
        vms[v.id] = v
        return
    vid = rng.choice(sorted(vms))
    old = vms[vid]
    if roll < 0.45:
        del vms[vid]
    elif roll < 0.6:
        vms[vid] = replace(old, state=VmState.GONE)
    elif roll < 0.75 and old.state in (VmState.BOOTING, VmState.REQUESTED):
        vms[vid] = replace(old, state=VmState.READY, ready_at=now)
    elif roll < 0.85 and old.state is VmState.READY:
        vms[vid] = replace(old, state=VmState.ALLOCATED, allocated_at=now, owner="u")
    else:
        vms[vid] = replace(old, last_input_at=now, warned_at=rng.choice([None, now]))


@pytest.mark.parametrize("seed", range(8))
def test_an_updated_census_equals_one_counted_afresh(seed):
    rng = random.Random(seed)
    vms: dict[str, Vm] = {}
    ids = [0]
    now, previous = 0.0, None
    for _ in range(400):
        for _ in range(rng.choice([0, 0, 1, 1, 2, 5])):
            mutate(rng, vms, now, ids)
        snap = Snapshot(now=now, vms=tuple(vms.values()))
        updated = census_of(snap, CONFIG, previous)
        fresh = census_of(snap, CONFIG)
        assert view(updated) == view(fresh)
        for after in (now, now + rng.uniform(0, 400)):
            assert updated.next_due(after) == brute_next_due(snap.vms, after)
        assert updated.next_due(now - 50.0) == brute_next_due(snap.vms, now - 50.0)
        # A pass may start again from an older census (the shell kept it): still the same answer.
        if rng.random() < 0.1 and previous is not None:
            assert view(census_of(snap, CONFIG, previous)) == view(fresh)
        previous = updated
        now += rng.choice([0.0, 1.0, 30.0, 120.0])


def test_a_census_from_another_config_or_a_later_time_is_ignored():
    snap = Snapshot(now=100.0, vms=(vm("r1"),))
    later = census_of(Snapshot(now=200.0, vms=(vm("r1"), vm("r2"))), CONFIG)
    assert set(census_of(snap, CONFIG, later).by_id) == {"r1"}
    other = replace(CONFIG, pools=POOLS[:1])
    assert set(census_of(snap, CONFIG, census_of(snap, other)).by_id) == {"r1"}


def test_updating_leaves_the_previous_census_as_it_was():
    a, b = vm("a"), vm("b", VmState.BOOTING)
    first = census_of(Snapshot(now=0.0, vms=(a, b)), CONFIG)
    before = view(first)
    census_of(Snapshot(now=200.0, vms=(a, replace(b, state=VmState.READY, ready_at=100.0))), CONFIG, first)
    assert view(first) == before
