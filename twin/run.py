"""Running scenarios: one run to a report directory, and side-by-side comparisons of settings."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.events import Event
from twin.model import build_twin
from twin.scenario import Scenario, load_scenario

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
DEFAULT_SCENARIO = SCENARIO_DIR / "facility-week.yaml"


@dataclass(frozen=True)
class RunResult:
    scenario: Scenario
    events: list[Event]
    metrics: dict[str, Any]


def simulate(scenario: Scenario, *, progress: Callable[[float], None] | None = None, **twin_kwargs) -> list[Event]:
    """The scenario's events, from a fresh twin."""
    return build_twin(scenario, progress=progress, **twin_kwargs).run()


def run_to_dir(scenario: Scenario, out_dir: Path, *, progress: Callable[[float], None] | None = None,
               **twin_kwargs) -> RunResult:
    """Simulate and write report.html, metrics.json and events.jsonl into `out_dir` (all or nothing)."""
    from reports.render import write_outputs

    events = simulate(scenario, progress=progress, **twin_kwargs)
    metrics = write_outputs(events, out_dir, title=f"daaas twin: {scenario.name} (seed {scenario.seed})")
    return RunResult(scenario, events, metrics)


def expand_grid(settings: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[str, Any]]]:
    """Every combination of the `--set KEY=V1,V2` values, in order."""
    keys = [k for k, _ in settings]
    return [list(zip(keys, combo, strict=True)) for combo in itertools.product(*(vs for _, vs in settings))]


def compare(path: Path, settings: Sequence[tuple[str, Sequence[Any]]], *, seed: int | None = None,
            on_done: Callable[[str, dict], None] | None = None) -> list[tuple[str, dict]]:
    """Run the scenario once per combination of settings; return (label, metrics) rows."""
    from reports.metrics import compute_metrics

    combos = expand_grid(settings)
    # Validate every combination before running any, so a bad value fails fast and writes nothing.
    scenarios = [(combo, load_scenario(path, overrides=combo, seed=seed)) for combo in combos]
    rows = []
    for combo, sc in scenarios:
        label = ", ".join(f"{k}={v}" for k, v in combo) or "as is"
        metrics = compute_metrics(simulate(sc))
        rows.append((label, metrics))
        if on_done:
            on_done(label, metrics)
    return rows
