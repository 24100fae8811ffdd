"""JSON manifests of a served directory: what a DMS client plans with and a DMTS verifies against.

A manifest is

    {"version": 1, "path": "<dir relative to the root, '' for the root>", "recursive": false,
     "entries": [{"path": "dir/file", "type": "file", "size": 123, "mode": 420, "mtime": 1600000000.0,
                  "uid": 0, "gid": 0, "checksum": "adler32:0a1b2c3d"},
                 {"path": "dir/sub", "type": "dir", "mode": 493, "mtime": ..., "uid": 0, "gid": 0}]}

Paths are relative to the served root and '/'-separated; `mode` holds the permission bits as an
integer; `checksum` is in the `<algo>:<hex>` form. Entries are sorted by path. Symlinks are
followed when they stay inside the root and left out when they escape it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from core.transfer_order import FileEntry
from dms.checksum import ChecksumCache

VERSION = 1


class ManifestError(ValueError):
    """A manifest that does not have the documented shape: the message names the field."""


def manifest_entry(root_real: Path, path: Path, st: os.stat_result, checksums: ChecksumCache | None) -> dict:
    rel = path.relative_to(root_real).as_posix()
    entry: dict[str, Any] = {"path": rel, "type": "dir" if stat.S_ISDIR(st.st_mode) else "file",
                             "mode": stat.S_IMODE(st.st_mode), "mtime": st.st_mtime,
                             "uid": st.st_uid, "gid": st.st_gid}
    if entry["type"] == "file":
        entry["size"] = st.st_size
        if checksums is not None:
            entry["checksum"] = "adler32:" + checksums.get(path, "adler32", st)
    return entry


def _inside(root_real: Path, p: Path) -> bool:
    return p == root_real or root_real in p.parents


def build_manifest(root: Path, real_dir: Path, *, checksums: ChecksumCache | None,
                   recursive: bool = False) -> dict:
    """The manifest of `real_dir` (already resolved under `root`): its files and subdirectories."""
    root_real = Path(os.path.realpath(root))
    entries: list[dict] = []
    pending = [real_dir]
    while pending:
        d = pending.pop()
        with os.scandir(d) as it:
            names = sorted(e.name for e in it)
        for name in names:
            p = d / name
            real = Path(os.path.realpath(p))
            if not _inside(root_real, real):
                continue  # a symlink out of the root: not ours to list
            try:
                st = os.stat(real)
            except OSError:
                continue  # vanished, or a dangling link
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue
            entry = manifest_entry(root_real, real, st, checksums)
            entry["path"] = p.relative_to(root_real).as_posix()  # the name as listed, not the link target
            entries.append(entry)
            if recursive and entry["type"] == "dir" and real != real_dir and not p.is_symlink():
                pending.append(p)
    entries.sort(key=lambda e: e["path"])
    rel = real_dir.relative_to(root_real).as_posix()
    return {"version": VERSION, "path": "" if rel == "." else rel, "recursive": recursive, "entries": entries}


def file_entries(manifest: Any, *, where: str = "manifest") -> list[FileEntry]:
    """The files of a manifest as `core.transfer_order.FileEntry`s (what the transfer adapters order)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
        raise ManifestError(f"{where}: expected an object with an 'entries' list")
    out = []
    for i, e in enumerate(manifest["entries"]):
        field = f"{where}.entries[{i}]"
        if not isinstance(e, dict):
            raise ManifestError(f"{field}: expected an object")
        if e.get("type", "file") != "file":
            continue
        try:
            out.append(FileEntry(path=str(e["path"]), size=int(e["size"]), mode=int(e.get("mode", 0o644)),
                                 mtime=float(e.get("mtime", 0.0)), checksum=e.get("checksum")))
        except KeyError as k:
            raise ManifestError(f"{field}: missing {k.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise ManifestError(f"{field}: {err}") from None
    return out
