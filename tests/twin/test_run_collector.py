"""A run raises the cyclic collector's thresholds while it runs (its records live to its end and make
next to no cycles) and gives the caller's back when it ends, even when the run fails."""
from __future__ import annotations

import gc

import pytest

from twin.model import RUN_GC_THRESHOLDS, build_twin
from twin.run import SCENARIO_DIR
from twin.scenario import load_scenario


@pytest.fixture
def thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def twin_seeing_thresholds(seen: list, *, fail: bool = False):
    sc = load_scenario(SCENARIO_DIR / "facility-week.yaml", overrides=[("duration", "2h")])
    twin = build_twin(sc)

    def sizer(_snapshot):
        seen.append(gc.get_threshold())
        if fail:
            raise RuntimeError("sizer failed")
        return None

    twin.set_sizer(sizer)
    return twin


@pytest.mark.parametrize(("caller", "during"), [
    ((700, 10, 10), RUN_GC_THRESHOLDS),
    ((200_000, 5, 5_000), (200_000, RUN_GC_THRESHOLDS[1], 5_000)),  # never lowered
])
def test_a_run_collects_rarely_and_restores_the_callers_thresholds(thresholds, caller, during):
    gc.set_threshold(*caller)
    seen: list = []
    twin_seeing_thresholds(seen).run()
    assert seen and set(seen) == {during}
    assert gc.get_threshold() == caller


def test_a_failed_run_restores_them_too(thresholds):
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError, match="sizer failed"):
        twin_seeing_thresholds([], fail=True).run()
    assert gc.get_threshold() == (700, 10, 10)
