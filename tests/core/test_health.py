"""core.health: verdicts from evidence, the backoff state machine, and failover in decide()."""
from __future__ import annotations

import pytest

from core.actions import Launch
from core.config import CloudConfig, Config, HealthConfig, PolicyConfig, PoolConfig
from core.health import BACKOFF, FAILING, GOOD, OK, PROBING, SLOW, CloudHealth, judge_cloud, update_health, usable
from core.policy import PolicyMemory, decide
from core.schedule import next_wakeup
from core.snapshot import CloudObservation, HealthSample, Snapshot, Vm, VmState

HC = HealthConfig(window_s=900.0, max_error_rate=0.5, min_calls=3, max_boot_failures=2, slow_factor=3.0,
                  backoff_initial_s=300.0, backoff_max_s=1000.0, backoff_growth=2.0)
CLOUD = CloudConfig("a", expected_boot_s=100.0)  # slow: a boot over 300 s
NOW = 10_000.0


def api(ok, at=NOW - 10):
    return HealthSample(at=at, kind="api", ok=ok)


def boot(ok=True, s=100.0, at=NOW - 10):
    return HealthSample(at=at, kind="boot", ok=ok, duration_s=s)


@pytest.mark.parametrize("case, samples, booting, since, strict, expected", [
    ("no evidence", [], [], float("-inf"), False, (GOOD, 0)),
    ("error rate above the limit", [api(False), api(False), api(True)], [], float("-inf"), False, (FAILING, 0)),
    ("error rate at the limit is fine", [api(False), api(False), api(True), api(True)], [], float("-inf"), False,
     (GOOD, 0)),
    ("too few calls to judge", [api(False), api(False)], [], float("-inf"), False, (GOOD, 0)),
    ("boot failures above the limit", [boot(False)] * 3 + [boot()] * 5, [], float("-inf"), False, (FAILING, 5)),
    ("one boot failure and no good boot", [boot(False)], [], float("-inf"), False, (FAILING, 0)),
    ("one boot failure among good boots", [boot(False), boot(), boot()], [], float("-inf"), False, (GOOD, 2)),
    ("slow boots", [boot(s=400.0)], [], float("-inf"), False, (SLOW, 0)),
    ("as many slow as fast boots", [boot(s=400.0), boot()], [], float("-inf"), False, (SLOW, 1)),
    ("a slow boot among fast ones", [boot(s=400.0), boot(), boot()], [], float("-inf"), False, (GOOD, 2)),
    ("a VM stuck booting", [], [400.0], float("-inf"), False, (SLOW, 0)),
    ("a VM booting normally", [], [200.0], float("-inf"), False, (GOOD, 0)),
    ("evidence older than the window is ignored", [api(False, at=NOW - 1000)] * 3, [], float("-inf"), False,
     (GOOD, 0)),
    ("evidence older than the last status change is ignored", [api(False, at=NOW - 100)] * 3, [], NOW - 50, False,
     (GOOD, 0)),
    ("strict (probing): a single error fails", [api(False), api(True), api(True)], [], float("-inf"), True,
     (FAILING, 0)),
    ("strict: a single failed boot fails", [boot(False), boot()], [], float("-inf"), True, (FAILING, 1)),
])
def test_judge_cloud(case, samples, booting, since, strict, expected):
    obs = CloudObservation("a", tuple(samples))
    assert judge_cloud(obs, CLOUD, booting, now=NOW, since=since, cfg=HC, strict=strict) == expected, case


CONFIG = Config(pools=(PoolConfig("p", min_ready=2, max_total=20),),
                clouds=(CloudConfig("a", priority=0, expected_boot_s=100.0), CloudConfig("b", priority=1)),
                policy=PolicyConfig(health=HC))


def step(now, memory, samples=(), vms=()):
    snap = Snapshot(now=now, vms=tuple(vms), clouds=(CloudObservation("a", tuple(samples)),))
    return update_health(snap, CONFIG, memory)


def test_backoff_grows_capped_then_probe_and_recovery():
    bad = [HealthSample(at=t, kind="api", ok=False) for t in (990.0, 995.0, 999.0)]
    mem, changes = step(1000.0, {}, bad)
    assert mem["a"] == CloudHealth(BACKOFF, 1000.0, 300.0, 1300.0, False, FAILING)
    assert [(c.cloud, c.status, c.verdict, c.backoff_s) for c in changes] == [("a", BACKOFF, FAILING, 300.0)]
    assert mem["b"].status == OK and not usable(mem["a"]) and usable(mem["b"])
    mem, changes = step(1299.0, mem, bad)  # still backed off
    assert mem["a"].status == BACKOFF and changes == []
    mem, _ = step(1300.0, mem, bad)  # backoff over: probe; old failures are old news
    assert (mem["a"].status, mem["a"].since) == (PROBING, 1300.0)
    mem, _ = step(1400.0, mem, bad)  # nothing new yet: keeps probing
    assert mem["a"].status == PROBING
    failed_probe = [*bad, HealthSample(at=1450.0, kind="boot", ok=False)]
    mem, _ = step(1500.0, mem, failed_probe)  # failed probe: longer backoff
    assert (mem["a"].status, mem["a"].backoff_s, mem["a"].until) == (BACKOFF, 600.0, 2100.0)
    mem, _ = step(2100.0, mem, failed_probe)
    mem, _ = step(2200.0, mem, [*failed_probe, HealthSample(at=2150.0, kind="api", ok=False)])
    assert (mem["a"].status, mem["a"].backoff_s) == (BACKOFF, 1000.0)  # 1200 capped at backoff_max_s
    mem, _ = step(3200.0, mem)
    assert mem["a"].status == PROBING
    good = [HealthSample(at=3300.0, kind="boot", ok=True, duration_s=90.0)]
    mem, changes = step(3400.0, mem, good)  # a good probe boot: back to OK
    assert mem["a"] == CloudHealth(OK, 3400.0, 0.0, float("-inf"), False, GOOD)
    assert [(c.status, c.verdict) for c in changes] == [(OK, GOOD)]


def test_slow_cloud_is_backed_off():
    stuck = Vm(id="s", pool="p", cloud="a", state=VmState.BOOTING, created_at=500.0)
    mem, _ = step(1000.0, {}, vms=[stuck])  # booting for 500 s, expected 100, factor 3
    assert (mem["a"].status, mem["a"].verdict) == (BACKOFF, SLOW)


def ready(i, cloud, state=VmState.READY, t=0.0):
    return Vm(id=f"v{i}", pool="p", cloud=cloud, state=state, created_at=t,
              ready_at=t if state is VmState.READY else None)


def test_failover_rebuilds_the_reserve_elsewhere_in_the_same_pass():
    bad = tuple(HealthSample(at=995.0, kind="api", ok=False) for _ in range(3))
    vms = (ready(1, "a", t=900.0), ready(2, "a", VmState.BOOTING, t=990.0))
    snap = Snapshot(now=1000.0, vms=vms, clouds=(CloudObservation("a", bad),))
    d = decide(snap, CONFIG)
    assert d.actions == (Launch("p", "b"), Launch("p", "b"))
    assert d.memory.clouds["a"].status == BACKOFF
    # the next pass, with the same evidence, does not launch again (the boots on b count)
    vms2 = (*vms, ready(3, "b", VmState.BOOTING, t=1000.0), ready(4, "b", VmState.BOOTING, t=1000.0))
    d2 = decide(Snapshot(now=1060.0, vms=vms2, clouds=snap.clouds), CONFIG, d.memory)
    assert d2.actions == ()


def test_probe_launch_once_when_backoff_ends():
    mem = PolicyMemory(clouds={"a": CloudHealth(BACKOFF, 0.0, 300.0, 300.0, False, FAILING)})
    full = (ready(1, "b", t=0.0), ready(2, "b", t=0.0))
    d = decide(Snapshot(now=300.0, vms=full), CONFIG, mem)
    assert d.actions == (Launch("p", "a", reason="probe", probe=True),)
    assert d.memory.clouds["a"].status == PROBING and d.memory.clouds["a"].probe_sent
    d2 = decide(Snapshot(now=360.0, vms=(*full, ready(3, "a", VmState.BOOTING, t=300.0))), CONFIG, d.memory)
    assert d2.actions == ()  # one probe only, and no ordinary launch on a probing cloud


def test_a_probe_without_any_outcome_fails_after_the_boot_timeout():
    """A probe VM that vanishes without evidence (a launch never confirmed) must not leave the cloud
    probing for ever: after the boot timeout the probe counts as failed and the backoff grows."""
    mem = PolicyMemory(clouds={"a": CloudHealth(BACKOFF, 0.0, 300.0, 300.0, False, FAILING)})
    full = (ready(1, "b", t=0.0), ready(2, "b", t=0.0))
    d = decide(Snapshot(now=300.0, vms=full), CONFIG, mem)
    assert d.memory.clouds["a"].probe_at == 300.0
    timeout = CONFIG.policy.boot_timeout_s
    wake = next_wakeup(Snapshot(now=300.0, vms=full), CONFIG, d.memory.clouds)
    assert wake <= 300.0 + timeout
    d2 = decide(Snapshot(now=300.0 + timeout - 1.0, vms=full), CONFIG, d.memory)  # the probe VM is gone
    assert d2.memory.clouds["a"].status == PROBING
    d3 = decide(Snapshot(now=300.0 + timeout, vms=full), CONFIG, d2.memory)
    h = d3.memory.clouds["a"]
    assert (h.status, h.verdict, h.backoff_s) == (BACKOFF, FAILING, 300.0 * CONFIG.policy.health.backoff_growth)
