"""Policy sweeps on Dask: every combination of settings over several seeds, the Pareto front of p95
wait against VM-hours, and a recommended setting with the YAML to paste.

A grid file:

    seeds: [1, 2, 3]
    target_p95: 10                 # seconds; the recommendation is the cheapest point meeting it
    oracle: true                   # also run the clairvoyant oracle per seed (the VM-hours floor)
    grid:
      pools.*.min_ready: [0, 1, 2, 3]
      policy.predictive.enabled: [false, true]

Each run is one task (scenario file, overrides, seed) on a Dask cluster: a LocalCluster of processes
by default, an existing scheduler by address. Runs are deterministic, so a point's numbers (means
over the seeds) come back identical when its setting is pasted into the scenario and replayed.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from twin.scenario import ScenarioError, load_scenario, read_raw, validate

ORACLE = "oracle"


@dataclass(frozen=True)
class Grid:
    """A validated grid file."""

    settings: tuple[tuple[str, tuple[Any, ...]], ...]
    seeds: tuple[int, ...] = (1,)
    target_p95: float | None = 10.0
    oracle: bool = True

    def combinations(self) -> list[tuple[tuple[str, Any], ...]]:
        keys = [k for k, _ in self.settings]
        return [tuple(zip(keys, c, strict=True)) for c in itertools.product(*(v for _, v in self.settings))]


@dataclass
class Point:
    """One setting's results, averaged over the seeds."""

    label: str
    overrides: tuple[tuple[str, Any], ...]
    kind: str  # reactive, predictive or oracle
    p95_wait_s: float
    vm_hours: float
    idle_vm_hours: float
    cost: float
    runs: list[dict[str, Any]] = field(default_factory=list)
    pareto: bool = False


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file; errors name the file and field."""
    raw = read_raw(path)
    src = str(path)
    if not isinstance(raw, dict):
        raise ScenarioError(f"{src}: expected a mapping with 'grid' (and 'seeds', 'target_p95', 'oracle')")
    unknown = set(raw) - {"grid", "seeds", "target_p95", "oracle"}
    if unknown:
        raise ScenarioError(f"{src}: {sorted(unknown)[0]}: unknown key (allowed: grid, seeds, target_p95, oracle)")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ScenarioError(f"{src}: grid: expected a mapping of field paths to lists of values")
    settings = []
    for k, v in grid.items():
        values = v if isinstance(v, list) else [v]
        if not values:
            raise ScenarioError(f"{src}: grid.{k}: no values")
        settings.append((str(k), tuple(values)))
    seeds = raw.get("seeds", [1])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds):
        raise ScenarioError(f"{src}: seeds: expected a list of integers")
    target = raw.get("target_p95", 10.0)
    if target is not None and (isinstance(target, bool) or not isinstance(target, int | float) or target < 0):
        raise ScenarioError(f"{src}: target_p95: expected seconds (a number >= 0) or null")
    oracle = raw.get("oracle", True)
    if not isinstance(oracle, bool):
        raise ScenarioError(f"{src}: oracle: expected true or false")
    return Grid(tuple(settings), tuple(seeds), None if target is None else float(target), oracle)


def label_of(overrides: Sequence[tuple[str, Any]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides) or "as is"


def kind_of(scenario_extra: Mapping[str, Any]) -> str:
    p = scenario_extra.get("policy.predictive")
    return "predictive" if p is not None and p.enabled and not p.shadow else "reactive"


def run_one(scenario_path: str, overrides: tuple[tuple[str, Any], ...], seed: int, oracle: bool = False
            ) -> dict[str, Any]:
    """One run (a Dask task): the headline numbers of the scenario with `overrides` and `seed`."""
    from reports.metrics import compute_metrics
    from twin.oracle import run_oracle
    from twin.run import simulate

    sc = load_scenario(scenario_path, overrides=overrides, seed=seed)
    m = compute_metrics(run_oracle(sc) if oracle else simulate(sc))
    return {"seed": seed, "overrides": [list(o) for o in overrides], "kind": ORACLE if oracle else kind_of(sc.extra),
            "p95_wait_s": m["wait_s"]["p95"] or 0.0, "vm_hours": m["vm_hours"]["total"],
            "idle_vm_hours": m["vm_hours"]["ready"], "cost": m["cost"], "requests": m["requests"]}


def tasks_of(scenario: str | Path, grid: Grid) -> list[tuple[str, tuple[tuple[str, Any], ...], int, bool]]:
    """Every run of the sweep, each validated before anything runs (a bad value fails fast)."""
    out = []
    for combo in grid.combinations():
        for seed in grid.seeds:
            load_scenario(scenario, overrides=combo, seed=seed)
            out.append((str(scenario), combo, seed, False))
    if grid.oracle:
        out += [(str(scenario), (), seed, True) for seed in grid.seeds]
    return out


def local_cluster(n_workers: int) -> Any:
    """A LocalCluster of `n_workers` single-threaded processes on loopback, without a dashboard.

    Its workers log at CRITICAL only: when the cluster closes, a worker's heartbeat can race the
    scheduler's shutdown and log "Failed to communicate with scheduler during heartbeat" with a
    CommClosedError traceback at ERROR (dask/distributed#7192), after every run has finished. A run
    that fails still fails where it counts: its exception comes back through its future.
    """
    import logging

    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        host="127.0.0.1", silence_logs=logging.CRITICAL)


def run_sweep(scenario: str | Path, grid: Grid, *, scheduler: str | None = None, n_workers: int = 2,
              progress: bool = True, client: Any = None) -> list[Point]:
    """Run every task on Dask and aggregate them into points."""
    from dask.distributed import Client, as_completed
    from tqdm import tqdm

    tasks = tasks_of(scenario, grid)
    own = client is None
    cluster = None
    if own:
        if scheduler:
            client = Client(scheduler)
        else:
            cluster = local_cluster(n_workers)
            client = Client(cluster)
    try:
        futures = [client.submit(run_one, *t, pure=False) for t in tasks]
        results = []
        with tqdm(total=len(futures), desc="sweep", unit="run", disable=not progress) as bar:
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update(1)
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    return aggregate(results)


def aggregate(results: Sequence[Mapping[str, Any]]) -> list[Point]:
    """Mean over seeds per setting (oracle runs make one point), Pareto flags set."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in results:
        key = (r["kind"] == ORACLE, json.dumps(r["overrides"]))
        groups.setdefault(key, []).append(r)
    points = []
    for (is_oracle, _), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        overrides = tuple(tuple(o) for o in runs[0]["overrides"])
        n = len(runs)
        points.append(Point(
            label=ORACLE if is_oracle else label_of(overrides), overrides=overrides, kind=runs[0]["kind"],
            p95_wait_s=sum(r["p95_wait_s"] for r in runs) / n, vm_hours=sum(r["vm_hours"] for r in runs) / n,
            idle_vm_hours=sum(r["idle_vm_hours"] for r in runs) / n, cost=sum(r["cost"] for r in runs) / n,
            runs=list(runs)))
    mark_pareto([p for p in points if p.kind != ORACLE])
    return sorted(points, key=lambda p: (p.kind == ORACLE, p.vm_hours))


def mark_pareto(points: Sequence[Point]) -> None:
    """A point is on the front when no other has both no more p95 wait and no more VM-hours (one less)."""
    for p in points:
        p.pareto = not any((q.p95_wait_s <= p.p95_wait_s and q.vm_hours <= p.vm_hours)
                           and (q.p95_wait_s < p.p95_wait_s or q.vm_hours < p.vm_hours) for q in points)


def recommend(points: Sequence[Point], target_p95: float | None) -> Point | None:
    """The cheapest point meeting the p95 target; without one, the knee of the Pareto front (the
    point farthest from the line through its two ends, both axes scaled to their range)."""
    front = sorted((p for p in points if p.pareto), key=lambda p: p.vm_hours)
    if not front:
        return None
    if target_p95 is not None:
        ok = [p for p in front if p.p95_wait_s <= target_p95 + 1e-9]
        if ok:
            return min(ok, key=lambda p: (p.vm_hours, p.p95_wait_s))
    if len(front) <= 2:
        return min(front, key=lambda p: p.p95_wait_s)
    xs = [p.vm_hours for p in front]
    ys = [p.p95_wait_s for p in front]
    sx = (max(xs) - min(xs)) or 1.0
    sy = (max(ys) - min(ys)) or 1.0
    (x0, y0), (x1, y1) = ((xs[0] - min(xs)) / sx, (ys[0] - min(ys)) / sy), ((xs[-1] - min(xs)) / sx,
                                                                          (ys[-1] - min(ys)) / sy)
    def dist(p: Point) -> float:
        x, y = (p.vm_hours - min(xs)) / sx, (p.p95_wait_s - min(ys)) / sy
        return abs((y1 - y0) * x - (x1 - x0) * y + x1 * y0 - y1 * x0) / math.hypot(x1 - x0, y1 - y0)
    return max(front, key=dist)


# ---- the YAML to paste -----------------------------------------------------------------------------


def snippet(overrides: Sequence[tuple[str, Any]], raw_scenario: Any) -> dict[str, Any]:
    """The overrides as a YAML fragment of the scenario (pools and clouds as lists of named items)."""
    frag: dict[str, Any] = {}
    for key, value in overrides:
        _put(frag, key.split("."), value, raw_scenario)
    return frag


def _put(node: dict, parts: list[str], value: Any, raw: Any) -> None:
    head, rest = parts[0], parts[1:]
    if not rest:
        node[head] = value
        return
    if head in ("pools", "clouds"):
        names = [x.get("name") for x in (raw or {}).get(head, []) if isinstance(x, dict)]
        targets = names if rest[0] == "*" else [rest[0]]
        items = node.setdefault(head, [])
        for name in targets:
            item = next((x for x in items if x["name"] == name), None)
            if item is None:
                item = {"name": name}
                items.append(item)
            _put(item, rest[1:], value, None)
        return
    _put(node.setdefault(head, {}), rest, value, None)


def merge(raw: Any, frag: Mapping[str, Any]) -> Any:
    """Paste a fragment into a scenario: mappings merge, pools and clouds merge by name."""
    out = copy.deepcopy(raw)
    _merge(out, frag)
    return out


def _merge(node: dict, frag: Mapping[str, Any]) -> None:
    for k, v in frag.items():
        if isinstance(v, dict) and isinstance(node.get(k), dict):
            _merge(node[k], v)
        elif isinstance(v, list) and k in ("pools", "clouds") and isinstance(node.get(k), list):
            for item in v:
                tgt = next((x for x in node[k] if isinstance(x, dict) and x.get("name") == item.get("name")), None)
                if tgt is None:
                    node[k].append(copy.deepcopy(item))
                else:
                    _merge(tgt, {kk: vv for kk, vv in item.items() if kk != "name"})
        else:
            node[k] = copy.deepcopy(v)


def replay_point(scenario: str | Path, frag: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, float]:
    """Paste `frag` into the scenario and replay it over `seeds`: the point's numbers, recomputed."""
    from reports.metrics import compute_metrics
    from twin.run import simulate

    raw = merge(read_raw(scenario), frag)
    rows = []
    for seed in seeds:
        raw["seed"] = seed
        sc = validate(copy.deepcopy(raw), source=str(scenario))
        m = compute_metrics(simulate(sc))
        rows.append((m["wait_s"]["p95"] or 0.0, m["vm_hours"]["total"], m["vm_hours"]["ready"], m["cost"]))
    n = len(rows)
    return {"p95_wait_s": sum(r[0] for r in rows) / n, "vm_hours": sum(r[1] for r in rows) / n,
            "idle_vm_hours": sum(r[2] for r in rows) / n, "cost": sum(r[3] for r in rows) / n}


# ---- the report ------------------------------------------------------------------------------------


def write_report(points: Sequence[Point], out_dir: str | Path, *, scenario: str | Path, grid: Grid,
                 note: Callable[[str], None] | None = None) -> Point | None:
    """sweep.json, recommended.yaml, pareto.png and report.html in `out_dir`; returns the recommendation."""
    from reports.html import Section, esc, image, page, table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    best = recommend(points, grid.target_p95)
    oracle = next((p for p in points if p.kind == ORACLE), None)
    raw = read_raw(scenario)
    frag = snippet(best.overrides, raw) if best else {}
    text = yaml.safe_dump(frag, sort_keys=False, default_flow_style=False)
    doc = {"scenario": str(scenario), "seeds": list(grid.seeds), "target_p95": grid.target_p95,
           "oracle_vm_hours": oracle.vm_hours if oracle else None,
           "recommended": None if best is None else {"label": best.label, "yaml": frag,
                                                     **_nums(best, oracle)},
           "points": [{"label": p.label, "kind": p.kind, "pareto": p.pareto,
                       "overrides": [list(o) for o in p.overrides], **_nums(p, oracle), "runs": p.runs}
                      for p in points]}
    (out / "sweep.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "recommended.yaml").write_text(
        f"# Recommended by daaas twin sweep ({best.label if best else 'nothing'}): paste into {scenario}\n" + text)
    png = _plot(points, best)
    (out / "pareto.png").write_bytes(png)
    rows = [[p.label, p.kind, "yes" if p.pareto else "", round(p.p95_wait_s, 1), round(p.vm_hours, 1),
             round(p.idle_vm_hours, 1), round(p.cost, 2),
             round(p.vm_hours / oracle.vm_hours, 3) if oracle and oracle.vm_hours else None] for p in points]
    sections = [
        ("Pareto front", image(png, "p95 wait against VM-hours")),
        ("Recommended setting", "<p>" + esc(best.label if best else "none") + "</p><pre>" + esc(text) + "</pre>"),
        ("All points (means over seeds)", table(["setting", "kind", "Pareto", "p95 wait (s)", "VM-hours",
                                                 "idle VM-hours", "cost", "VM-hours / oracle"], rows)),
    ]
    html = page(f"daaas twin sweep: {Path(scenario).name}",
                [("scenario", str(scenario)), ("seeds", ", ".join(map(str, grid.seeds))),
                 ("target p95 wait (s)", grid.target_p95), ("runs", sum(len(p.runs) for p in points))],
                [Section(t, b) for t, b in sections])
    (out / "report.html").write_text(html)
    if note:
        note(f"recommended: {best.label if best else 'none'}")
    return best


def _nums(p: Point, oracle: Point | None) -> dict[str, Any]:
    return {"p95_wait_s": p.p95_wait_s, "vm_hours": p.vm_hours, "idle_vm_hours": p.idle_vm_hours, "cost": p.cost,
            "vm_hours_over_oracle": (p.vm_hours / oracle.vm_hours) if oracle and oracle.vm_hours else None}


def _plot(points: Sequence[Point], best: Point | None) -> bytes:
    from reports.plots import new_figure, to_png

    fig = new_figure(9, 5)
    ax, ax2 = fig.subplots(1, 2)
    styles = {"reactive": ("o", "tab:blue"), "predictive": ("s", "tab:green"), ORACLE: ("*", "tab:red")}
    for axis, attr, xlabel in ((ax, "vm_hours", "VM-hours"), (ax2, "cost", "cost")):
        for kind, (marker, color) in styles.items():
            pts = [p for p in points if p.kind == kind]
            if pts:
                axis.scatter([getattr(p, attr) for p in pts], [p.p95_wait_s for p in pts], marker=marker,
                             color=color, label=kind, s=60 if kind == ORACLE else 25, alpha=0.8)
        front = sorted((p for p in points if p.pareto), key=lambda p: getattr(p, attr))
        if front:
            axis.step([getattr(p, attr) for p in front], [p.p95_wait_s for p in front], where="post",
                      color="grey", lw=1, label="Pareto front (VM-hours)" if attr == "vm_hours" else None)
        if best is not None:
            axis.scatter([getattr(best, attr)], [best.p95_wait_s], facecolors="none", edgecolors="black", s=160,
                         label="recommended")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("p95 wait (s)")
        axis.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)
