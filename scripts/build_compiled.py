"""Compile the policy core with mypyc into the venv, so the twin and live run it at C speed.

    .venv/bin/python scripts/build_compiled.py [--force]

Run by scripts/setup.sh (hence by `make demo` and `make test`). It compiles `GROUP` (the policy
core and the twin's engine) as one mypyc group in a scratch directory, outside the repo: the venv's old setuptools
rejects this repo's pyproject.toml if it reads it from the cwd. The results go to
`.venv/daaas-compiled/` with a manifest (module names, the sha256 of each source, the Python ABI),
and a `.pth` file in the venv's site-packages installs `scripts/compiled_loader.py` at interpreter
start; that loader serves the compiled modules only while every source still hashes as built.

Fast when nothing changed (hashes compared, nothing rebuilt). If compiling is not possible (no C
compiler, no Python headers, no mypy), it says so in one line, removes any old build and exits 0:
core then runs interpreted, with the same results.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Compiled together: mypyc binds calls between them directly. The policy core (but core.ports, only
# Protocols) and the twin's engine: its controller, simulated clouds, demand and predictive sizer.
# The rest of the twin (scenario files, traces, sweeps, reports) runs once per run and stays interpreted.
PACKAGES = ("core", "twin")
GROUP = tuple(f"core.{m}" for m in (
    "actions", "activity", "allocation", "census", "config", "events", "forecast", "health", "maintenance",
    "placement", "policy", "reclaim", "schedule", "sizing", "snapshot", "transfer_order")) + tuple(
    f"twin.{m}" for m in ("cloud", "demand", "model", "predictive"))
# mypy checks what the group imports too (twin.scenario, numpy, simpy, ...) but judges only the group.
MYPY_FLAGS = ["--ignore-missing-imports", "--follow-imports=silent"]
GROUP_NAME = "daaas_core"  # the shared library is the top-level module `daaas_core__mypyc`
MYPY_PIN = "mypy==2.4.1"
PTH_NAME = "daaas-compiled.pth"
LOADER = REPO / "scripts" / "compiled_loader.py"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def abi() -> dict[str, str]:
    """What a compiled extension is tied to: the interpreter's version and extension suffix."""
    return {"python": sys.version.split()[0], "cache_tag": sys.implementation.cache_tag,
            "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX") or ""}


def venv_dir() -> Path:
    return Path(sys.prefix)


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def pth_text(out: Path) -> str:
    """One line: load the repo's loader by its path (no module on sys.path can stand in for it), install it.

    Does nothing when the loader file is gone (a removed checkout), so no Python start fails on it.
    """
    return ("import importlib.util as u, os, sys; "
            f"p = {str(LOADER)!r}; s = os.path.exists(p) and u.spec_from_file_location('daaas_compiled_loader', p); "
            "m = s and u.module_from_spec(s); "
            "s and (sys.modules.setdefault('daaas_compiled_loader', m), s.loader.exec_module(m), "
            f"m.install({str(out)!r}))\n")


def mypy_version() -> str | None:
    """The installed mypy's version: the extensions depend on its runtime (librt), so a new one rebuilds."""
    import importlib.metadata
    try:
        return importlib.metadata.version("mypy")
    except importlib.metadata.PackageNotFoundError:
        return None


def expected_manifest() -> dict:
    return {"group": GROUP_NAME, "abi": abi(), "mypy": mypy_version(),
            "modules": {m: sha256(source(REPO, m)) for m in GROUP}}


def source(root: Path, module: str) -> Path:
    """Where `module` (package.name) has its source under `root`."""
    package, _, name = module.partition(".")
    return root / package / f"{name}.py"


def up_to_date(out: Path, want: dict) -> bool:
    try:
        have = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if {k: have.get(k) for k in ("group", "abi", "mypy")} != {k: want[k] for k in ("group", "abi", "mypy")}:
        return False
    if {m: e.get("sha256") for m, e in have.get("modules", {}).items()} != want["modules"]:
        return False
    files = [have["shared"]["file"], *(e["file"] for e in have["modules"].values())]
    pth = site_packages() / PTH_NAME
    return all((out / f).is_file() for f in files) and pth.is_file() and pth.read_text() == pth_text(out)


def ensure_mypyc() -> str | None:
    """mypyc importable in this venv, installing the pinned mypy if needed; else why not."""
    try:
        import mypyc.build  # noqa: F401
        return None
    except ImportError:
        pass
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", MYPY_PIN], capture_output=True, text=True)
    if r.returncode != 0:
        return f"pip install {MYPY_PIN} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def compile_group(scratch: Path) -> tuple[dict[str, str], str]:
    """Build in `scratch`; return {module: extension path relative to scratch} and the shared library."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, scratch / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    paths = MYPY_FLAGS + [str(source(Path(), m)) for m in GROUP]
    (scratch / "setup.py").write_text(
        "from mypyc.build import mypycify\n"
        "from setuptools import setup\n"
        f"setup(name='daaas-compiled', ext_modules=mypycify({paths!r}, opt_level='3', group_name={GROUP_NAME!r}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAAAS_COMPILED")}
    env["DAAAS_COMPILED"] = "0"  # the build's own Python must not load an old build
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--parallel", "2"],
                       cwd=scratch, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if "error" in ln.lower()] or \
            (r.stderr + r.stdout).strip().splitlines() or ["?"]
        raise RuntimeError(lines[0].strip())
    suffix = abi()["ext_suffix"]
    mods = {m: str(source(Path(), m).with_suffix(""))  + suffix for m in GROUP}
    shared = f"{GROUP_NAME}__mypyc{suffix}"
    missing = [f for f in [shared, *mods.values()] if not (scratch / f).is_file()]
    if missing:
        raise RuntimeError(f"the build made no {missing[0]}")
    return mods, shared


def remove(out: Path) -> None:
    (site_packages() / PTH_NAME).unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)


def build(out: Path, force: bool) -> str:
    want = expected_manifest()
    if not force and up_to_date(out, want):
        return f"compiled core up to date ({len(GROUP)} modules)"
    why = ensure_mypyc()
    if why:
        remove(out)
        return f"compiled core NOT built ({why}); core runs interpreted"
    with tempfile.TemporaryDirectory(prefix="daaas-mypyc-") as tmp:
        scratch = Path(tmp)
        try:
            mods, shared = compile_group(scratch)
        except (RuntimeError, OSError) as e:
            remove(out)
            return f"compiled core NOT built (mypyc: {e}); core runs interpreted"
        new = out.with_name(out.name + ".new")
        shutil.rmtree(new, ignore_errors=True)
        for package in PACKAGES:
            (new / package).mkdir(parents=True)
        for f in [shared, *mods.values()]:
            shutil.copy2(scratch / f, new / f)
    manifest = {"group": GROUP_NAME, "abi": want["abi"], "mypy": mypy_version(),
                "shared": {"name": f"{GROUP_NAME}__mypyc", "file": shared},
                "modules": {m: {"sha256": want["modules"][m], "file": f} for m, f in mods.items()}}
    (new / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    # Replace the old build whole: a Python starting meanwhile sees either build, never a mix.
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    (site_packages() / PTH_NAME).write_text(pth_text(out))
    return f"compiled core built ({len(GROUP)} modules, mypyc) into {out}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when the sources are unchanged")
    args = ap.parse_args()
    print("setup: " + build(venv_dir() / "daaas-compiled", args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
