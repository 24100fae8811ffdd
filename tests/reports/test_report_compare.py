"""compare_table / compare_html: settings side by side, with the optional oracle ratio row."""
from __future__ import annotations

from core.events import Event
from reports.compare import compare_html, compare_rows, compare_table
from reports.metrics import compute_metrics


def E(t, kind, pool=None, cloud=None, vm=None, user=None, **details):  # noqa: N802
    return Event(t=float(t), kind=kind, pool=pool, cloud=cloud, vm=vm, user=user, details=details)


def run(reserve_hours: float, wait: float, cloud: str = "a"):
    """One VM ready for `reserve_hours`, then allocated for an hour; one request that waited `wait`."""
    r = reserve_hours * 3600
    return compute_metrics([
        E(0, "run", end=r + 3600, clouds={cloud: {"cost_per_hour": 1.0}}),
        E(0, "launch", "p", cloud, "v"), E(0, "ready", "p", cloud, "v"),
        E(r, "request", "p", user="u"), E(r, "assign", "p", cloud, "v", "u", wait_s=wait),
    ])


ROWS = [("min_ready=1", run(1.0, 0.0)), ("min_ready=0", run(0.0, 95.0, cloud="b"))]


def test_rows_and_oracle_ratio():
    data = dict(compare_rows(ROWS, oracle_vm_hours=1.0))
    assert data["requests"] == [1, 1]
    assert data["wait p95 (s)"] == [0.0, 95.0]
    assert data["VM-hours ready (idle)"] == [1.0, 0.0]
    assert data["VM-hours total"] == [2.0, 1.0]
    assert data["VM-hours / oracle"] == [2.0, 1.0]
    assert data["share a"] == [1.0, None] and data["share b"] == [None, 1.0]
    labels = [label for label, _ in compare_rows(ROWS, oracle_vm_hours=1.0)]
    assert labels.index("VM-hours / oracle") == labels.index("VM-hours total") + 1
    assert "VM-hours / oracle" not in dict(compare_rows(ROWS))


def test_oracle_per_label():
    data = dict(compare_rows(ROWS, oracle_vm_hours={"min_ready=1": 0.5}))
    assert data["VM-hours / oracle"] == [4.0, None]


def test_plain_text_table():
    text = compare_table(ROWS, oracle_vm_hours=1.0)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "min_ready=1", "min_ready=0"]
    assert set(lines[1]) <= {"-", " "}
    row = next(line for line in lines if line.startswith("wait p95 (s)"))
    assert row.split()[-2:] == ["0", "95"]
    row = next(line for line in lines if line.startswith("VM-hours / oracle"))
    assert row.split()[-2:] == ["2", "1"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert compare_table([]) == "(no runs to compare)\n"


def test_html_table():
    html = compare_html(ROWS, oracle_vm_hours=1.0)
    assert html.startswith("<table>") and "<th>min_ready=0</th>" in html and "VM-hours / oracle" in html
    assert "http" not in html
