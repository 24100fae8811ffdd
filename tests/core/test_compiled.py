"""The mypyc-compiled core (scripts/build_compiled.py, scripts/compiled_loader.py).

Every check runs in a fresh interpreter (a subprocess), as the `.pth` file decides at start-up which
core a process runs. These do not skip: the twin's speed depends on the compiled core being the one
loaded after `scripts/setup.sh`, and its correctness on it giving the same events as the sources.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_compiled", REPO / "scripts" / "build_compiled.py")
assert _spec is not None and _spec.loader is not None
build_compiled = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_compiled)
GROUP = list(build_compiled.GROUP)  # core.* and twin.*

# Prints, as JSON: the loader's status line and, for each compiled module, whether it is an extension.
PROBE = """
import importlib, importlib.machinery, json, sys
mods = {m: importlib.import_module(m) for m in sys.argv[1:]}
loader = sys.modules.get("daaas_compiled_loader")
print(json.dumps({
    "status": loader.status() if loader else "no loader installed (no daaas-compiled.pth)",
    "compiled": {m: isinstance(mod.__loader__, importlib.machinery.ExtensionFileLoader) for m, mod in mods.items()},
    "files": {m: mod.__file__ for m, mod in mods.items()},
}))
"""

# Runs scenarios and prints, for each, the sha256 of its events as written to events.jsonl.
SCENARIO_HASHES = """
import hashlib, json, sys
from twin.run import simulate
from twin.scenario import load_scenario
out = {}
for path in sys.argv[1:]:
    events = simulate(load_scenario(path))
    out[path] = [len(events), hashlib.sha256("".join(e.to_json() + "\\n" for e in events).encode()).hexdigest()]
print(json.dumps({"status": sys.modules["daaas_compiled_loader"].status(), "hashes": out}))
"""

SCENARIOS = ["facility-week", "cloud-outage", "lcg-replay", "beamtime-calendar", "planned-maintenance"]


def run_python(code: str, *args: str, cwd: Path = REPO, compiled: bool = True, timeout: float = 300) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DAAAS_COMPILED", "PYTHONPATH")}
    if not compiled:
        env["DAAAS_COMPILED"] = "0"
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_setup_installs_the_compiled_core():
    got = run_python(PROBE, *GROUP)
    assert got["status"].startswith("core: compiled"), got["status"] + " (run scripts/setup.sh)"
    assert all(got["compiled"].values()), got["files"]
    assert not any(f.startswith((str(REPO / "core"), str(REPO / "twin"))) for f in got["files"].values())


def test_disabled_by_environment():
    got = run_python(PROBE, *GROUP, compiled=False)
    assert got["status"] == "core: interpreted (DAAAS_COMPILED=0)"
    assert not any(got["compiled"].values())
    assert all(f == str(build_compiled.source(REPO, m)) for m, f in got["files"].items())


def test_scenarios_give_identical_events_compiled_and_interpreted():
    paths = [str(REPO / "scenarios" / f"{s}.yaml") for s in SCENARIOS]
    compiled = run_python(SCENARIO_HASHES, *paths)
    interpreted = run_python(SCENARIO_HASHES, *paths, compiled=False)
    assert compiled["status"].startswith("core: compiled"), compiled["status"]
    assert interpreted["status"].startswith("core: interpreted"), interpreted["status"]
    assert all(n > 100 for n, _h in compiled["hashes"].values())
    assert compiled["hashes"] == interpreted["hashes"]


def copy_of_core(tmp_path: Path) -> Path:
    """A copy of the compiled group's packages (core and twin), imported from there by a process started in it."""
    for package in build_compiled.PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_copy_with_the_same_sources_runs_compiled(tmp_path):
    # The check is on the sources' content where `core` is imported from, not on the repo's path.
    got = run_python(PROBE, *GROUP, cwd=copy_of_core(tmp_path))
    assert got["status"].startswith("core: compiled"), got["status"]
    assert all(got["compiled"].values())


@pytest.mark.parametrize("edited", ["core/sizing.py", "twin/model.py"])
def test_one_edited_source_makes_the_whole_group_interpreted(tmp_path, edited):
    root = copy_of_core(tmp_path)
    source = root / edited
    source.write_text(source.read_text() + "\nEDITED = True\n")
    module = edited.removesuffix(".py").replace("/", ".")
    got = run_python(PROBE + f"import {module}; assert {module}.EDITED\n", *GROUP, cwd=root)
    assert got["status"] == f"core: interpreted ({source} differs from the compiled build (rerun scripts/setup.sh))"
    assert not any(got["compiled"].values()), got["files"]
    assert all(f.startswith(str(root)) for f in got["files"].values())


def test_a_missing_source_makes_all_of_core_interpreted(tmp_path):
    root = copy_of_core(tmp_path)
    (root / "core" / "transfer_order.py").unlink()
    got = run_python(PROBE, *[m for m in GROUP if m != "core.transfer_order"], cwd=root)
    assert got["status"].startswith("core: interpreted"), got["status"]
    assert not any(got["compiled"].values())


def test_core_from_one_tree_and_twin_from_another_run_interpreted(tmp_path):
    # A compiled twin calls the compiled core directly: with core imported from elsewhere, neither is served.
    shutil.copytree(REPO / "core", tmp_path / "core", ignore=shutil.ignore_patterns("__pycache__"))
    got = run_python(PROBE, *GROUP, cwd=tmp_path)
    assert got["status"].startswith("core: interpreted (twin is imported from"), got["status"]
    assert not any(got["compiled"].values()), got["files"]


def test_manifest_names_every_module_with_the_hash_of_its_source():
    manifest = json.loads((Path(sys.prefix) / "daaas-compiled" / "manifest.json").read_text())
    assert sorted(manifest["modules"]) == sorted(GROUP)
    for name, entry in manifest["modules"].items():
        src = build_compiled.source(REPO, name)
        assert entry["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest(), name
    assert manifest["abi"]["python"] == sys.version.split()[0]


# Pickles (as the Dask sweep does) and copies a scenario's config, a decision and its events.
ROUND_TRIP = """
import copy, dataclasses, json, pickle, sys
import cloudpickle
from core.policy import PolicyMemory, decide
from core.snapshot import Snapshot
from twin.run import simulate
from twin.scenario import load_scenario
sc = load_scenario(sys.argv[1], overrides=[("duration", "1d")])
events = simulate(sc)
decision = decide(Snapshot(now=0.0, vms=()), sc.config, PolicyMemory())
ok = {}
for name, obj in [("config", sc.config), ("events", events), ("decision", decision)]:
    ok[name] = (pickle.loads(pickle.dumps(obj)) == obj and cloudpickle.loads(cloudpickle.dumps(obj)) == obj
                and copy.deepcopy(obj) == obj and copy.copy(obj) == obj)
ok["replace"] = dataclasses.replace(sc.config, pools=()).pools == ()
print(json.dumps({"status": sys.modules["daaas_compiled_loader"].status(), "ok": ok}))
"""


def test_compiled_frozen_dataclasses_pickle_copy_and_replace():
    got = run_python(ROUND_TRIP, str(REPO / "scenarios" / "facility-week.yaml"))
    assert got["status"].startswith("core: compiled"), got["status"]
    assert got["ok"] == {"config": True, "events": True, "decision": True, "replace": True}
