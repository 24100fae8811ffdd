"""beamtime-surge.yaml: a beam-time quadruples one pool's demand; the reserve keeps up within the
quotas, and the surge spills onto the expensive public cloud only while it lasts."""
from __future__ import annotations

import pytest

from core import events as ev
from twin.run import SCENARIO_DIR, simulate
from twin.scenario import load_scenario


@pytest.fixture(scope="module")
def run():
    sc = load_scenario(SCENARIO_DIR / "beamtime-surge.yaml")
    (surge,) = [s for d in sc.demand.values() for s in d.surges]
    return sc, simulate(sc), surge


def test_the_surge_spills_onto_the_public_cloud_only_while_it_lasts(run):
    sc, events, surge = run
    public = max(sc.config.clouds, key=lambda c: c.priority).name
    spilled = [e for e in events if e.kind == ev.LAUNCH and e.pool == "mantid" and e.cloud == public]
    assert spilled
    assert all(surge.start <= e.t < surge.end for e in spilled)


def test_quotas_hold_and_users_barely_wait(run):
    sc, events, surge = run
    quota = {c.name: c.quota for c in sc.config.clouds}
    live: dict[str, int] = dict.fromkeys(quota, 0)
    where: dict[str, str] = {}
    for e in events:
        if e.kind == ev.LAUNCH:
            where[e.vm] = e.cloud
            live[e.cloud] += 1
            assert live[e.cloud] <= quota[e.cloud], e
        elif e.kind in (ev.TERMINATE, ev.GONE, ev.BOOT_FAILED) and e.vm in where:
            live[where.pop(e.vm)] -= 1
    assert not [e for e in events if e.kind == ev.LAUNCH_FAILED and e.details.get("quota")]
    waits = sorted(e.details["wait_s"] for e in events if e.kind == ev.ASSIGN and e.pool == "mantid"
                   and surge.start <= e.t < surge.end)
    assert len(waits) > 300
    preferred = min(sc.config.clouds, key=lambda c: c.priority).name
    boot = next(c.boot_median_s for c in sc.clouds if c.name == preferred)
    assert waits[int(0.95 * len(waits))] < boot  # most surge users find a ready VM
