"""Benchmark: one 32-run policy sweep on a Dask LocalCluster of 1 worker process, then of 2, in one run.

Each run is a twin replay of facility-week (stretched to 4 weeks so a run is long enough that Dask's
per-task overhead does not dominate): 4 reserve sizes x reactive/predictive x 4 seeds. Workers are
warmed up (imports done) before the clock starts. Prints both wall times and the speedup.

    .venv/bin/python bench/sweep_scaling.py [--days 28]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.sweep import Grid, local_cluster, run_one, run_sweep  # noqa: E402

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "facility-week.yaml"


def _warm() -> bool:
    import statsmodels.tsa.holtwinters  # noqa: F401

    import reports.metrics  # noqa: F401
    import twin.run  # noqa: F401
    return True


def timed(grid: Grid, workers: int, scenario: Path) -> tuple[float, int]:
    from dask.distributed import Client

    with local_cluster(workers) as cluster, Client(cluster) as client:
        client.run(_warm)
        client.gather(client.map(run_one, [str(scenario)] * workers, [(("duration", "1d"),)] * workers,
                                 list(range(workers)), pure=False))
        t0 = time.perf_counter()
        points = run_sweep(scenario, grid, client=client, progress=False)
        return time.perf_counter() - t0, sum(len(p.runs) for p in points)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--scenario", type=Path, default=SCENARIO)
    args = ap.parse_args()
    grid = Grid(settings=(("duration", (f"{args.days}d",)), ("pools.mantid.min_ready", (1, 2, 3, 4)),
                          ("policy.predictive", ({"enabled": False}, {"enabled": True, "floor": 0}))),
                seeds=(1, 2, 3, 4), target_p95=10.0, oracle=False)
    one, n1 = timed(grid, 1, args.scenario)
    two, n2 = timed(grid, 2, args.scenario)
    print(f"sweep of {n1} runs ({args.days}-day facility scenario each)")
    print(f"1 Dask worker : {one:7.2f} s")
    print(f"2 Dask workers: {two:7.2f} s  ({n2} runs)")
    print(f"speedup: {one / two:.2f}x  (target >= 1.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
