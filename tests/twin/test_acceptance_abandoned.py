"""Acceptance (issue 2), abandoned-sessions.yaml: abandoned VMs are reclaimed after timeout plus
grace; long computations left running are not (until they end, then timeout plus grace)."""
from __future__ import annotations

import pytest

from core import events as ev
from twin.run import SCENARIO_DIR, simulate
from twin.scenario import load_scenario


@pytest.fixture(scope="module")
def run():
    sc = load_scenario(SCENARIO_DIR / "abandoned-sessions.yaml")
    return sc, simulate(sc)


def _by_vm(events, kind):
    out: dict[str, list] = {}
    for e in events:
        if e.kind == kind:
            out.setdefault(e.vm, []).append(e)
    return out


def _check(sc, events, busy: bool) -> int:
    pools = {p.name: p for p in sc.config.pools}
    period, end = sc.config.policy.period_s, sc.duration_s
    terms, warns = _by_vm(events, ev.TERMINATE), _by_vm(events, ev.WARN)
    checked = 0
    for a in (e for e in events if e.kind == ev.ABANDON and (e.details["busy_s"] > 0) == busy):
        pool = pools[a.pool]
        quiet_from = a.t + a.details["busy_s"]  # the VM shows no activity from here on
        due = quiet_from + pool.idle_timeout_s + pool.grace_s
        idle_warns = [w for w in warns.get(a.vm, []) if w.details["reason"] == "idle"]
        term = terms.get(a.vm, [None])[0]
        # Never warned nor reclaimed for idleness while the computation runs or before the timeout.
        assert all(w.t >= quiet_from + pool.idle_timeout_s for w in idle_warns), a
        assert term is None or term.details["reason"] != "idle" or term.t >= due, (a, term)
        if due + period < end:
            assert term is not None and term.details["reason"] == "idle", (a, term)
            assert due <= term.t <= due + period, (a, term, due)
            assert idle_warns and idle_warns[0].t <= term.t - pool.grace_s
            checked += 1
    return checked


def test_abandoned_idle_vms_are_reclaimed_after_timeout_plus_grace(run):
    sc, events = run
    assert _check(sc, events, busy=False) >= 10


def test_long_computations_left_running_are_not_culled(run):
    sc, events = run
    assert _check(sc, events, busy=True) >= 5
    # Some computations are still running at the end, and their VMs are still there.
    terms = _by_vm(events, ev.TERMINATE)
    running = [a for a in events if a.kind == ev.ABANDON and a.t + a.details["busy_s"] > sc.duration_s
               and a.details["busy_s"] > 0]
    assert all(a.vm not in terms for a in running)
