"""core.transfer_order: which files of a dataset move, and in what order."""
from __future__ import annotations

import pytest

from core.transfer_order import ADAPTERS, FileEntry, plan_transfer

FILES = [FileEntry("run1/big.nxs", 5000), FileEntry("run1/meta.json", 10), FileEntry("run1/sub/deep.dat", 1),
         FileEntry("top.txt", 300), FileEntry("run10/x", 2), FileEntry("a.log", 300)]


@pytest.mark.parametrize("adapter, cwd, expected", [
    ("current_directory", "run1", ["run1/meta.json", "run1/big.nxs"]),  # not run1/sub, not run10
    ("current_directory", "/run1/", ["run1/meta.json", "run1/big.nxs"]),  # slashes are normalised
    ("current_directory", "", ["a.log", "top.txt"]),  # the top level; equal sizes by path
    ("current_directory", "nowhere", []),
    ("small_first", "run1", ["run1/sub/deep.dat", "run1/meta.json", "run1/big.nxs"]),
    ("small_first", "", ["run1/sub/deep.dat", "run10/x", "run1/meta.json", "a.log", "top.txt", "run1/big.nxs"]),
    ("everything", "", ["a.log", "run1/big.nxs", "run1/meta.json", "run1/sub/deep.dat", "run10/x", "top.txt"]),
    ("everything", "run1", ["run1/big.nxs", "run1/meta.json", "run1/sub/deep.dat"]),
])
def test_plan_transfer(adapter, cwd, expected):
    assert [f.path for f in plan_transfer(FILES, adapter, cwd=cwd)] == expected


def test_adapters_do_not_mutate_the_listing():
    listing = list(FILES)
    for name in ADAPTERS:
        plan_transfer(listing, name)
    assert listing == FILES


def test_unknown_adapter_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'largest_first'") as e:
        plan_transfer(FILES, "largest_first")
    assert "small_first" in str(e.value)  # and says what is known
