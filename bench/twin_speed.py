"""Benchmark: the twin against a bare SimPy loop with the same mix of events, in one process.

The bare loop replays the same arrivals with the same boot, session and periodic-tick timeouts but
no policy, no bookkeeping and no events written: it is the floor for any SimPy model of this
demand. Prints events per second for both, their ratio, and the wall time of the simulated year.

    .venv/bin/python bench/twin_speed.py [--scenario bench/facility-year.yaml] [--days N]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import simpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.demand import arrivals  # noqa: E402
from twin.model import build_twin  # noqa: E402
from twin.scenario import load_scenario  # noqa: E402


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes."""

    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    def step(self) -> None:
        self.processed += 1
        super().step()


def bare_loop(scenario) -> tuple[int, float]:
    """The same arrivals, boots, sessions and ticks as the twin, with nothing decided."""
    env = CountingEnvironment()
    master = random.Random(scenario.seed)
    boot = scenario.clouds[0].boot_median_s

    def arrive(stream):
        for a in stream:
            yield env.timeout(a.t - env.now)
            b = env.timeout(boot)  # a VM boots to replace the one taken
            b.callbacks.append(lambda _e: None)
            s = env.timeout(a.session_s)  # the session ends
            s.callbacks.append(lambda _e: None)

    def tick():
        while True:
            yield env.timeout(scenario.config.policy.period_s)

    for pool in scenario.config.pools:
        rng = random.Random(master.getrandbits(64))
        env.process(arrive(arrivals(pool.name, scenario.demand[pool.name], rng, duration_s=scenario.duration_s,
                                    start_weekday=scenario.start_weekday)))
    env.process(tick())
    t0 = time.perf_counter()
    env.run(until=scenario.duration_s)
    return env.processed, time.perf_counter() - t0


def twin_run(scenario) -> tuple[int, float, int, int]:
    env = CountingEnvironment()
    twin = build_twin(scenario, env=env)
    t0 = time.perf_counter()
    events = twin.run()
    return env.processed, time.perf_counter() - t0, len(events), twin.passes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(Path(__file__).with_name("facility-year.yaml")))
    ap.add_argument("--days", type=float, help="simulate this many days instead of the scenario's duration")
    ap.add_argument("--no-predictive", action="store_true", help="skip the predictive row")
    args = ap.parse_args()
    loader = sys.modules.get("daaas_compiled_loader")  # installed at start-up by the venv's daaas-compiled.pth
    print(loader.status() if loader else "core: interpreted (no compiled build installed: run scripts/setup.sh)")
    overrides = [("duration", f"{args.days}d")] if args.days else []
    sc = load_scenario(args.scenario, overrides=overrides)
    bare_events, bare_s = bare_loop(sc)
    twin_events, twin_s, logged, passes = twin_run(sc)
    print(f"scenario {sc.name}: {sc.duration_s / 86400:.0f} simulated days, {len(sc.config.pools)} pools, "
          f"{len(sc.config.clouds)} clouds")
    print(f"bare SimPy loop : {bare_events:>10,d} events in {bare_s:7.2f} s = {bare_events / bare_s:>10,.0f} ev/s")
    print(f"daaas twin      : {twin_events:>10,d} events in {twin_s:7.2f} s = {twin_events / twin_s:>10,.0f} ev/s"
          f"  ({passes:,d} policy passes, {logged:,d} events logged)")
    ratio = (twin_events / twin_s) / (bare_events / bare_s)
    print(f"ratio twin/bare events per second: {ratio:.3f}  (target >= 0.5)")
    # The twin sleeps through the periodic ticks that would decide nothing, so it processes fewer events
    # than the bare loop (which ticks every period): the time for the same simulated period says more.
    print(f"ratio bare/twin wall time for the same period: {bare_s / twin_s:.3f}")
    print(f"wall time of the simulated period: {twin_s:.1f} s (target for a year: < 15 s)")
    if not args.no_predictive:
        pred = load_scenario(args.scenario, overrides=[*overrides, ("policy.predictive", {"enabled": True})])
        p_events, p_s, p_logged, p_passes = twin_run(pred)
        print(f"twin, predictive: {p_events:>10,d} events in {p_s:7.2f} s = {p_events / p_s:>10,.0f} ev/s"
              f"  ({p_passes:,d} policy passes, {p_logged:,d} events logged)")
        print(f"wall time of the simulated period, predictive: {p_s:.1f} s (target for a year: < 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
