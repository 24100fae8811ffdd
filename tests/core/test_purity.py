"""core/ stays pure: no shell, no clock, no randomness, no I/O libraries (numpy and statsmodels are allowed)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
FORBIDDEN = {"twin", "live", "dms", "reports", "cli", "simpy", "libcloud", "flask", "time", "os", "random",
             "subprocess", "socket", "requests", "sqlalchemy"}


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.add("__import__")  # dynamic imports would dodge this test
    return roots


FILES = sorted(CORE.glob("*.py"))


def test_core_has_modules():
    assert {p.name for p in FILES} >= {"config.py", "snapshot.py", "actions.py", "policy.py", "ports.py"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_core_module_is_pure(path):
    bad = imported_roots(path.read_text()) & (FORBIDDEN | {"__import__", "importlib"})
    assert not bad, f"core/{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("source, roots", [
    ("import os.path", {"os"}),
    ("from time import monotonic", {"time"}),
    ("import numpy as np\nfrom core.config import Config", {"numpy", "core"}),
    ("from . import x", set()),
    ("def f():\n    import random\n", {"random"}),  # inside a function too
])
def test_the_checker_sees_imports(source, roots):
    assert imported_roots(source) == roots
