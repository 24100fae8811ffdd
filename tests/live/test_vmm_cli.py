"""`daaas serve` (the embedded default on a fresh state dir, and with a config) and config validation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.events import parse_lines
from live.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


def run(args, tmp_path, timeout=120):
    env = dict(os.environ, DAAAS_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_serve_with_no_config_runs_the_embedded_default(tmp_path):
    r = run(["serve", "--duration", "5", "--seed", "3"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "embedded simulated clouds" in lines[0]
    assert len(lines) >= 3 and all("listed[sim-local=" in x for x in lines[1:])
    logs = sorted((tmp_path / "state" / "embedded" / "logs").glob("*.jsonl"))
    events = parse_lines(logs[0].read_text().splitlines(), source=str(logs[0]))
    kinds = {e.kind for e in events}
    assert events[0].kind == "run" and {"launch", "request", "load"} <= kinds
    # the report reads the live log
    out = tmp_path / "report"
    rep = subprocess.run([sys.executable, "-m", "cli", "report", "--from-logs", str(logs[0].parent), "-o", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    assert json.loads((out / "metrics.json").read_text())["requests"] >= 1


def test_serve_once_with_a_config(tmp_path):
    cfg = tmp_path / "vmm.yaml"
    cfg.write_text("store: sqlite:///live.db\nlog_dir: logs\npools:\n  - {name: a, min_ready: 1}\n")
    r = run(["serve", "--config", str(cfg), "--once"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "live.db").exists() and list((tmp_path / "logs").glob("usage-*.jsonl"))


@pytest.mark.parametrize("text, field", [
    ("pools: [{name: a, min_ready: -1}]", "pools[0].min_ready"),
    ("pools: [{name: a, min_ready: 1.5}]", "pools[0].min_ready"),
    ("pools: [{name: a, colour: red}]", "colour"),
    ("pools: [{min_ready: 1}]", "pools[0].name"),
    ("pools: [{name: a}, {name: a}]", "duplicate"),
    ("policy: {boot_timeout_s: fast}", "policy.boot_timeout_s"),
    ("policy: {health: {window_s: -5}}", "policy.health.window_s"),
    ("store: mysql://x", "store"),
    ("clouds: clouds.yaml", "owner_id"),
    ("period_s: 0", "period_s"),
    ("portal: {port: 99999}", "portal.port"),
    ("nonsense: 1", "nonsense"),
    ("[1, 2]", "mapping"),
])
def test_bad_configs_name_file_and_field(tmp_path, text, field):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError) as e:
        load_settings(cfg)
    assert str(cfg) in str(e.value) and field in str(e.value)
    r = run(["serve", "--config", str(cfg), "--once"], tmp_path)
    assert r.returncode == 2 and field in r.stderr
    assert not (tmp_path / "live.db").exists()


def test_a_missing_config_file_exits_2(tmp_path):
    r = run(["serve", "--config", str(tmp_path / "nope.yaml")], tmp_path)
    assert r.returncode == 2 and "nope.yaml" in r.stderr and "cannot read" in r.stderr


def test_relative_paths_are_relative_to_the_config(tmp_path):
    cfg = tmp_path / "sub" / "vmm.yaml"
    cfg.parent.mkdir()
    cfg.write_text("store: sqlite:///db/live.db\nlog_dir: logs\nperiod_s: 5\n")
    s = load_settings(cfg)
    assert s.store_url == f"sqlite:///{cfg.parent.resolve() / 'db' / 'live.db'}"
    assert s.log_dir == cfg.parent / "logs" and s.period_s == 5


def test_a_second_instance_on_one_sqlite_store_stands_by(tmp_path):
    from live.leader import FileLeader

    cfg = tmp_path / "vmm.yaml"
    cfg.write_text("store: sqlite:///live.db\nlog_dir: logs\n")
    held = FileLeader(f"{tmp_path / 'live.db'}.leader.lock")
    assert held.acquire()
    try:
        r = run(["serve", "--config", str(cfg), "--once"], tmp_path)
        assert r.returncode == 1 and "standby" in r.stdout
    finally:
        held.release()
    assert run(["serve", "--config", str(cfg), "--once"], tmp_path).returncode == 0


def test_a_new_request_wakes_the_leading_vmm_before_its_next_periodic_pass(tmp_path):
    """A user's request is seen by a pass at once (as the twin's controller passes on a request), not up
    to `period_s` later: the serving loop looks for new requests between its periodic passes."""
    import time

    from live.store import open_store

    cfg = tmp_path / "vmm.yaml"
    cfg.write_text("store: sqlite:///live.db\nlog_dir: logs\nperiod_s: 600\n"
                   "pools:\n  - {name: a, min_ready: 1}\n")
    env = dict(os.environ, DAAAS_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--config", str(cfg), "--duration", "300"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()  # the banner, then one line per pass
        assert "daaas serve" in first, first + p.stderr.read()
        assert "listed[" in p.stdout.readline()  # the first periodic pass is done; the next is 600 s away
        store = open_store(f"sqlite:///{tmp_path / 'live.db'}")
        rid = store.create_request(pool="a", user="alice", now=time.time())
        assert "listed[" in p.stdout.readline()  # a pass, long before the periodic one
        (row,) = [r for r in store.requests() if r.id == rid]
        assert row.announced
        store.close()
    finally:
        p.terminate()
        p.wait(30)
