"""Serve the mypyc-compiled policy core and twin engine, but only while they match the sources they
were built from.

Installed at interpreter start by `daaas-compiled.pth`, which scripts/build_compiled.py writes into
the venv's site-packages next to the build in `.venv/daaas-compiled/` (extensions + manifest.json).

A meta path finder placed first on `sys.meta_path`: for a module named in the manifest (`core.<mod>`,
`twin.<mod>`) it returns the compiled extension only if EVERY compiled module's source, in the tree the
import is actually reading (the parent of the package directory in the `path` passed to find_spec),
hashes to the manifest's sha256, and the group's packages are all imported from that tree. All or
nothing: mypyc binds calls between the modules of one group directly, so one edited source switches
the whole group back to the interpreted `.py` files. Otherwise (and with `DAAAS_COMPILED=0`) it
returns None and Python's normal import machinery loads the sources.

`status()` says, in one line, whether this process runs core compiled or interpreted, and why.
"""
from __future__ import annotations

# Only what the interpreter has loaded already at start-up: this module runs in every Python of the venv.
# The rest (hashlib, json, dataclasses) is imported when core is.
import importlib.machinery
import importlib.util
import os
import sys

ENV = "DAAAS_COMPILED"
PACKAGE = "core"  # what status() reports on
PACKAGES = ("core", "twin")  # whose modules the group may hold
_SHARED_SUFFIX = "__mypyc"  # the group's shared library: a top-level module `<group>__mypyc`


def disabled() -> bool:
    """`DAAAS_COMPILED=0` (or false/no/off) in the environment: interpreted, whatever is built."""
    return os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off")


def _abi() -> dict[str, str]:
    import sysconfig
    return {"python": sys.version.split()[0], "cache_tag": sys.implementation.cache_tag,
            "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX") or ""}


class CompiledModuleLoader(importlib.machinery.ExtensionFileLoader):
    """Loads a compiled module, then lets pickle and copy rebuild the frozen dataclasses of the group."""

    group: tuple[str, ...] = ()

    def exec_module(self, module) -> None:
        import copyreg
        import dataclasses

        super().exec_module(module)
        # Not only this module's: the group's shared library initialises the modules it imports itself,
        # without asking the finder, so they never pass through here.
        for name in self.group:
            for obj in list(getattr(sys.modules.get(name), "__dict__", {}).values()):
                if (isinstance(obj, type) and obj.__module__ == name and dataclasses.is_dataclass(obj)
                        and obj.__dataclass_params__.frozen and obj not in copyreg.dispatch_table):
                    copyreg.pickle(obj, _reduce_frozen)


def _reduce_frozen(obj):
    """Pickle a compiled frozen dataclass by its fields.

    mypyc's own unpickling sets each attribute with setattr, which a frozen dataclass refuses (the
    Dask sweep ships configs and events between processes).
    """
    import dataclasses
    return _rebuild, (type(obj), tuple((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)))


def _rebuild(cls, items):
    """The inverse of `_reduce_frozen`: through __init__, as `dataclasses.replace` does; then any init=False field."""
    import dataclasses
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in items if k in init})
    for k, v in items:
        if k not in init:
            object.__setattr__(obj, k, v)
    return obj


class CompiledCoreFinder:
    """A meta path finder for the compiled `core` modules of the build in `out` (see the module docstring).

    First on sys.meta_path, it is asked about every import: anything but `core.*` and the shared library
    is declined at once, and the manifest is read only when core is first imported.
    """

    daaas_compiled_finder = True  # how status() recognises it on sys.meta_path

    def __init__(self, out: str) -> None:
        self.out = out
        self._manifest: dict | None = None
        self.unusable = ""  # why the build cannot serve this interpreter at all
        self.verdicts: dict[str, tuple[bool, str]] = {}  # core package dir -> (compiled?, why)

    @property
    def modules(self) -> dict[str, dict]:
        return self.manifest()["modules"] if self.manifest() else {}

    def manifest(self) -> dict | None:
        if self._manifest is None and not self.unusable:
            import json
            try:
                with open(os.path.join(self.out, "manifest.json")) as f:
                    manifest = json.load(f)
            except (OSError, ValueError) as e:
                self.unusable = f"no usable compiled build in {self.out} ({type(e).__name__})"
                return None
            if manifest.get("abi") != _abi():
                self.unusable = (f"the compiled build is for Python {manifest.get('abi', {}).get('python')}, "
                                 f"this is {_abi()['python']} (rerun scripts/setup.sh)")
                return None
            self._manifest = manifest
        return self._manifest

    def check(self, pkg_dir: str) -> tuple[bool, str]:
        """Whether the sources of the tree holding the package directory `pkg_dir` are exactly those
        compiled; the reason in words."""
        root = os.path.dirname(os.path.normpath(pkg_dir))
        if root not in self.verdicts:
            self.verdicts[root] = self._check(root)
        return self.verdicts[root]

    def _check(self, root: str) -> tuple[bool, str]:
        import hashlib
        if not self.manifest():
            return False, self.unusable
        # The group's packages must all come from this tree: a compiled twin calls the compiled core
        # directly, whatever `core` package the process imported.
        for package in {name.partition(".")[0] for name in self.modules}:
            where = _package_dir(package)
            if where is None or os.path.dirname(os.path.normpath(where)) != root:
                return False, f"{package} is imported from {where}, not from {root}"
        for name, entry in sorted(self.modules.items()):
            package, _, module = name.partition(".")
            src = os.path.join(root, package, module + ".py")
            try:
                with open(src, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                return False, f"{src} is missing"
            if digest != entry["sha256"]:
                return False, f"{src} differs from the compiled build (rerun scripts/setup.sh)"
            if not os.path.isfile(os.path.join(self.out, entry["file"])):
                return False, f"{os.path.join(self.out, entry['file'])} is missing"
        return True, f"sources in {root} match the build"

    def find_spec(self, fullname: str, path=None, target=None):
        if not (fullname.partition(".")[0] in PACKAGES or fullname.endswith(_SHARED_SUFFIX)) or disabled():
            return None
        manifest = self.manifest()
        if manifest is None:
            return None
        if fullname == manifest["shared"]["name"]:
            return self._spec(fullname, manifest["shared"]["file"])
        entry = manifest["modules"].get(fullname)
        if entry is None or not path:
            return None
        pkg_dir = next(iter(path), None)
        if pkg_dir is None or not self.check(os.fspath(pkg_dir))[0]:
            return None
        return self._spec(fullname, entry["file"])

    def _spec(self, fullname: str, rel: str):
        file = os.path.join(self.out, rel)
        loader = CompiledModuleLoader(fullname, file)
        loader.group = tuple(self.modules)
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)

    def invalidate_caches(self) -> None:
        self.verdicts.clear()


def _package_dir(package: str) -> str | None:
    """The directory `import package` reads (or has read) in this process."""
    module = sys.modules.get(package)
    if module is not None:
        paths = getattr(module, "__path__", None)
    else:
        spec = importlib.util.find_spec(package)
        paths = spec.submodule_search_locations if spec is not None else None
    return os.fspath(next(iter(paths))) if paths else None


def install(out: str) -> None:
    """Put a finder for the build in `out` first on sys.meta_path (once)."""
    if _finder() is None:
        sys.meta_path.insert(0, CompiledCoreFinder(out))


def _finder() -> CompiledCoreFinder | None:
    return next((f for f in sys.meta_path if getattr(f, "daaas_compiled_finder", False)), None)


def is_compiled(module) -> bool:
    """Whether a module object was loaded from a compiled extension."""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def status() -> str:
    """One line: does this process run `core` (and the twin's engine) compiled or interpreted, and why."""
    finder = _finder()
    if disabled():
        return f"core: interpreted ({ENV}=0)"
    if finder is None:
        return "core: interpreted (no compiled build installed: run scripts/setup.sh)"
    if PACKAGE in sys.modules:
        pkg_dir = next(iter(sys.modules[PACKAGE].__path__))
    else:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return f"core: not importable from {os.getcwd()}"
        pkg_dir = next(iter(spec.submodule_search_locations))
    ok, why = finder.check(os.fspath(pkg_dir))
    loaded = [m for name, m in sys.modules.items() if name in finder.modules]
    if ok and any(not is_compiled(m) for m in loaded):
        return "core: interpreted (core was imported before the compiled build was checked)"
    n = len(finder.modules)
    return f"core: compiled (mypyc, {n} modules; {why})" if ok else f"core: interpreted ({why})"
