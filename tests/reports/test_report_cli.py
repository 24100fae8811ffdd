"""`daaas report`: one log or a directory of usage logs; a bad line exits 2 naming file:line."""
from __future__ import annotations

import json

import pytest

from cli import main
from core.events import Event
from reports.metrics import compute_metrics


def E(t, kind, pool=None, cloud=None, vm=None, user=None, **details):  # noqa: N802
    return Event(t=float(t), kind=kind, pool=pool, cloud=cloud, vm=vm, user=user, details=details)


def session(i: int, t0: float) -> list[Event]:
    vm = f"v{i}"
    return [E(t0, "launch", "p", "a", vm, cost_per_hour=0.5), E(t0 + 60, "ready", "p", "a", vm),
            E(t0 + 100, "request", "p", user=f"u{i}"), E(t0 + 100, "assign", "p", "a", vm, f"u{i}", wait_s=i * 1.0),
            E(t0 + 1000, "terminate", "p", "a", vm, reason="idle")]


def write_log(path, events):
    path.write_text("".join(e.to_json() + "\n" for e in events))


def test_single_file(tmp_path, capsys):
    log = [E(0, "run", end=5000, time_base="unix")] + [e for i in range(3) for e in session(i, i * 500.0)]
    log.sort(key=lambda e: e.t)
    write_log(tmp_path / "events.jsonl", log)
    assert main(["report", str(tmp_path / "events.jsonl"), "-o", str(tmp_path / "out"), "--title", "T"]) == 0
    out = capsys.readouterr().out
    assert "report: " in out and "3 requests" in out
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == compute_metrics(log)
    assert "<title>T</title>" in (tmp_path / "out" / "report.html").read_text()


def test_from_logs_merges_files_by_time(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # Two VMM hosts' logs whose times interleave; a non-jsonl file is ignored.
    a = [e for i in (0, 2, 4) for e in session(i, i * 300.0)]
    b = [e for i in (1, 3) for e in session(i, i * 300.0)]
    write_log(logs / "host-a.jsonl", sorted(a, key=lambda e: e.t))
    write_log(logs / "host-b.jsonl", sorted(b, key=lambda e: e.t))
    (logs / "notes.txt").write_text("not a log")
    assert main(["report", "--from-logs", str(logs), "-o", str(tmp_path / "out")]) == 0
    merged = sorted(a + b, key=lambda e: e.t)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == compute_metrics(merged)
    ts = [json.loads(line)["t"] for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert ts == sorted(ts) and len(ts) == len(merged)


@pytest.mark.parametrize(("line", "reason"), [
    ("{not json", "not JSON"),
    ('{"t": 5, "kind": "teleport"}', "kind"),
    ('{"t": "soon", "kind": "request"}', "'t'"),
    ('{"t": 5, "kind": "assign", "details": {"wait_s": "long"}}', "details.wait_s"),
])
def test_bad_line_exits_2_naming_file_and_line_and_writes_nothing(tmp_path, capsys, line, reason):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "a.jsonl", session(0, 0.0))
    good = [e.to_json() for e in session(1, 50.0)]
    # line 4 of b.jsonl is bad (after a blank line, which parse_lines skips but still counts)
    (logs / "b.jsonl").write_text("\n".join([good[0], good[1], "", line, good[2]]) + "\n")
    out = tmp_path / "out"
    assert main(["report", "--from-logs", str(logs), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{logs / 'b.jsonl'}:4:" in err and reason in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


@pytest.mark.parametrize("args", [
    [],  # neither a file nor --from-logs
    ["EVENTS", "--from-logs", "LOGS"],  # both
    ["missing.jsonl"],
    ["--from-logs", "missing-dir"],
    ["--from-logs", "EMPTYDIR"],
    ["EMPTYFILE"],
])
def test_bad_arguments_exit_2(tmp_path, capsys, args):
    (tmp_path / "EVENTS").write_text(E(0, "request", "p").to_json() + "\n")
    (tmp_path / "LOGS").mkdir()
    (tmp_path / "EMPTYDIR").mkdir()
    (tmp_path / "EMPTYFILE").write_text("\n")
    args = [str(tmp_path / a) if a in ("EVENTS", "LOGS", "EMPTYDIR", "EMPTYFILE", "missing.jsonl", "missing-dir")
            else a for a in args]
    assert main(["report", *args, "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("daaas: ")
    assert not (tmp_path / "out").exists()


def test_output_is_a_file(tmp_path, capsys):
    write_log(tmp_path / "e.jsonl", session(0, 0.0))
    (tmp_path / "out").write_text("keep")
    assert main(["report", str(tmp_path / "e.jsonl"), "-o", str(tmp_path / "out")]) == 2
    assert "-o" in capsys.readouterr().err and (tmp_path / "out").read_text() == "keep"
