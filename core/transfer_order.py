"""Transfer ordering adapters: which files of a dataset to move, and in what order.

The DMS asks one of these for a plan; each is a pure function of a listing. A user who opens a
directory wants its files first (`current_directory`); a user who starts with small metadata files
wants them usable at once (`small_first`); a batch job wants `everything`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FileEntry:
    """A file of a dataset, as a manifest lists it."""

    path: str  # relative, '/'-separated
    size: int
    mode: int = 0o644
    mtime: float = 0.0
    checksum: str | None = None  # "adler32:xxxxxxxx", "md5:...", "sha-256:..."


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _norm_dir(d: str) -> str:
    return d.strip("/")


def current_directory(files: Sequence[FileEntry], *, cwd: str = "") -> list[FileEntry]:
    """Only the files directly in `cwd` (not its subdirectories), smallest first."""
    d = _norm_dir(cwd)
    return sorted((f for f in files if _parent(f.path) == d), key=lambda f: (f.size, f.path))


def small_first(files: Sequence[FileEntry], *, cwd: str = "") -> list[FileEntry]:
    """Every file under `cwd`, smallest first, so many small files become usable early."""
    d = _norm_dir(cwd)
    inside = [f for f in files if not d or f.path == d or f.path.startswith(d + "/")]
    return sorted(inside, key=lambda f: (f.size, f.path))


def everything(files: Sequence[FileEntry], *, cwd: str = "") -> list[FileEntry]:
    """Every file under `cwd`, in path order (the order of the listing, made deterministic)."""
    d = _norm_dir(cwd)
    return sorted((f for f in files if not d or f.path.startswith(d + "/") or f.path == d),
                  key=lambda f: f.path)


ADAPTERS: dict[str, Callable[..., list[FileEntry]]] = {
    "current_directory": current_directory,
    "small_first": small_first,
    "everything": everything,
}


def plan_transfer(files: Sequence[FileEntry], adapter: str, *, cwd: str = "") -> list[FileEntry]:
    """The files to move, in order, by the named adapter; an unknown name is a ValueError naming it."""
    try:
        fn = ADAPTERS[adapter]
    except KeyError:
        raise ValueError(f"unknown transfer adapter {adapter!r}; expected one of {sorted(ADAPTERS)}"
                         ) from None
    return fn(files, cwd=cwd)
