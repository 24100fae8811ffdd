"""Safe resolution of request paths under a served root.

A request path comes from the network: it is resolved under the root only if it has no `..`
component, is not absolute once the URL's leading slash is removed, has no NUL byte, and does not
leave the root through a symlink. Anything else is a `PathError` naming the path and the reason,
which servers answer with 400 (malformed) or 403 (escapes the root).
"""
from __future__ import annotations

import os
from pathlib import Path


class PathError(ValueError):
    """A request path that cannot be served; `status` is the HTTP status a server should answer."""

    def __init__(self, path: str, reason: str, *, status: int = 400):
        super().__init__(f"path {path!r}: {reason}")
        self.path = path
        self.reason = reason
        self.status = status


def split_request_path(path: str) -> list[str]:
    """The components of a decoded URL path (one leading '/' allowed), or a PathError."""
    if not isinstance(path, str):
        raise PathError(repr(path), "not a string")
    if "\x00" in path:
        raise PathError(path, "contains a NUL byte")
    rel = path[1:] if path.startswith("/") else path
    if rel.startswith("/") or rel.startswith("\\") or (len(rel) > 1 and rel[1] == ":"):
        raise PathError(path, "absolute paths are not allowed")
    parts = []
    for part in rel.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise PathError(path, "'..' components are not allowed")
        parts.append(part)
    return parts


def resolve_under(root: Path, path: str) -> Path:
    """The real path of `path` under `root`; it need not exist, but every existing symlink on the way
    must stay inside the root (checked on the resolved path, so the check sees what open() would)."""
    root_real = Path(os.path.realpath(root))
    parts = split_request_path(path)
    candidate = root_real.joinpath(*parts)
    real = Path(os.path.realpath(candidate))
    if real != root_real and root_real not in real.parents:
        raise PathError(path, "leaves the served root (through a symlink)", status=403)
    return real


def relative_to_root(root: Path, real: Path) -> str:
    """The '/'-separated path of `real` relative to `root` ('' for the root itself)."""
    rel = Path(real).relative_to(os.path.realpath(root))
    return "" if str(rel) == "." else rel.as_posix()
