"""Check registry: one way to find checks, lazily.

Every check — built-in or third-party — is found the same way: the `audit.checks`
entry-point group names packages (or modules) of checks, and the registry scans their
source for classes decorated with `@register_check`, reading each class's `name`
without importing it. The suite's own pyproject declares `audit-suite = "checks"` there.
So adding a check is adding a module to a scanned package: no central list to edit, and
`audit validate` imports only the check modules its spec uses (torch, captum and shap
load when a check module is imported). An entry point may also name one class
(`"pkg.module:Class"`).

Why a scan rather than one entry point per check: a new built-in check then touches
only its own module, its test and the README catalogue row, and needs no reinstall.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

from audit.check import KINDS, REQUIREMENTS, Check, MetricSpec
from audit.results import AREA_KEYS

ENTRY_POINT_GROUP = "audit.checks"
BUILTIN_PACKAGE = "checks"


class RegistryError(ValueError):
    """A broken registration: duplicate names, or something that is not a Check."""


class DuplicateCheckError(RegistryError):
    pass


def _decorated(node: ast.ClassDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "register_check":
            return True
    return False


def _class_name_attr(node: ast.ClassDef) -> str | None:
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else [])
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
        if any(isinstance(t, ast.Name) and t.id == "name" for t in targets):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    return None


def _classes_in(path: Path) -> list[tuple[str, str | None]]:
    """(class, its literal `name` or None) of each `@register_check` class in one file."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    return [(node.name, _class_name_attr(node)) for node in tree.body
            if isinstance(node, ast.ClassDef) and _decorated(node)]


class _ScanCache:
    """`_classes_in` per file, kept on disk under $AUDIT_CACHE_DIR (default
    ~/.cache/audit-suite/) and keyed by path, size and modification time, as Python keeps
    its bytecode: parsing every check module costs ~0.25 s, on every command. A file
    that changed is parsed again; a cache that cannot be read or written is ignored."""

    def __init__(self) -> None:
        root = os.environ.get("AUDIT_CACHE_DIR") or str(Path.home() / ".cache" / "audit-suite")
        self.path = Path(root) / "registry-scan.json"
        self.entries: dict[str, list] = {}
        self.dirty = False
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict) and loaded.get("format") == _SCAN_FORMAT:
                self.entries = loaded.get("files", {})
        except (OSError, ValueError):
            pass

    def classes(self, path: Path) -> list[tuple[str, str | None]]:
        st = path.stat()
        key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns]
        hit = self.entries.get(key)
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == stamp:
            return [(str(c), None if n is None else str(n)) for c, n in hit[1]]
        found = _classes_in(path)
        self.entries[key] = [stamp, [list(f) for f in found]]
        self.dirty = True
        return found

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".registry-scan.")
            with os.fdopen(fd, "w") as fh:
                json.dump({"format": _SCAN_FORMAT, "files": self.entries}, fh)
            os.replace(tmp, self.path)  # atomic: a concurrent reader sees the old or the new file
        except OSError:
            pass


_SCAN_FORMAT = 1  # bump when `_classes_in` changes what it reads


def scan(package: str) -> dict[str, str]:
    """{check name: "module:Class"} for the `@register_check` classes in `package` (a
    package is walked recursively; a plain module is read alone), without importing them."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise RegistryError(f"check package '{package}' cannot be found")
    if spec.submodule_search_locations:
        files = [(p, root) for root in spec.submodule_search_locations for p in sorted(Path(root).rglob("*.py"))]
    elif spec.origin and spec.origin.endswith(".py"):
        files = [(Path(spec.origin), None)]
    else:
        raise RegistryError(f"check package '{package}' has no Python source to scan")
    cache = _ScanCache()
    found: dict[str, str] = {}
    for path, root in files:
        if root is None:
            module = package
        else:
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            module = ".".join([package, *parts])
        for cls, name in cache.classes(path):
            if name is None:
                raise RegistryError(f"{module}:{cls} is registered but has no literal `name = \"...\"`")
            target = f"{module}:{cls}"
            if name in found:
                raise DuplicateCheckError(f"check '{name}' is registered twice ({found[name]} and {target})")
            found[name] = target
    cache.save()
    return found


class Registry:
    def __init__(self) -> None:
        self._lazy: dict[str, str] = {}
        self._loaded: dict[str, type[Check]] = {}
        self._discovered = False

    def add_lazy(self, name: str, target: str) -> None:
        if name in self._lazy and self._lazy[name] != target:
            raise DuplicateCheckError(f"check '{name}' is registered twice ({self._lazy[name]} and {target})")
        self._lazy[name] = target

    def add_source(self, value: str) -> None:
        """An entry point's value: a package or module to scan, or one "module:Class"."""
        if ":" in value:
            module, _, attr = value.partition(":")
            tree_name = _name_in_module(module, attr)
            self.add_lazy(tree_name, value)
        else:
            for name, target in scan(value).items():
                self.add_lazy(name, target)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        sources = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
        # running from a source tree that was never installed: the suite's own package
        if BUILTIN_PACKAGE not in sources:
            sources.insert(0, BUILTIN_PACKAGE)
        for value in sources:
            self.add_source(value)

    def register(self, cls: type[Check]) -> type[Check]:
        name = cls.name
        if name in self._loaded and self._loaded[name] is not cls:
            raise DuplicateCheckError(f"check '{name}' is registered twice "
                                      f"({self._loaded[name].__module__} and {cls.__module__})")
        self._loaded[name] = cls
        return cls

    def names(self) -> list[str]:
        self._discover()
        return sorted(set(self._lazy) | set(self._loaded))

    def get(self, name: str) -> type[Check]:
        self._discover()
        if name not in self._loaded:
            target = self._lazy.get(name)
            if target is None:
                raise KeyError(name)
            module, _, attr = target.partition(":")
            cls = getattr(importlib.import_module(module), attr, None)
            if not (isinstance(cls, type) and issubclass(cls, Check)):
                raise RegistryError(f"'{target}' (registered as check '{name}') is not a Check subclass")
            if cls.name != name:
                raise RegistryError(f"'{target}' is registered as '{name}' but its name is '{cls.name}'")
            self._loaded[name] = cls
        return self._loaded[name]


def _name_in_module(module: str, attr: str) -> str:
    """The `name` of class `attr` in `module`, read from source without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise RegistryError(f"check module '{module}' cannot be found")
    for node in ast.parse(Path(spec.origin).read_bytes()).body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            name = _class_name_attr(node)
            if name:
                return name
    raise RegistryError(f"'{module}:{attr}' is not a check class with a literal `name`")


registry = Registry()


def register_check(cls: type[Check]) -> type[Check]:
    """Class decorator: marks a check for discovery and validates its declaration."""
    if not (isinstance(cls, type) and issubclass(cls, Check)):
        raise RegistryError(f"@register_check on {getattr(cls, '__qualname__', cls)!r}: not a Check subclass")
    name = getattr(cls, "name", "")
    if not name or name != name.lower() or " " in name or "." not in name:
        raise RegistryError(f"{cls.__qualname__}: a check needs a dotted lowercase `name` (e.g. 'family.thing')")
    if cls.area not in AREA_KEYS:
        raise RegistryError(f"{cls.__qualname__}: area '{cls.area}' is not one of {', '.join(AREA_KEYS)}")
    unknown = [r for r in cls.requires if r not in REQUIREMENTS]
    if unknown:
        raise RegistryError(f"{cls.__qualname__}: unknown requirement(s) {unknown}; known: {', '.join(REQUIREMENTS)}")
    if not cls.kinds or any(k not in KINDS for k in cls.kinds):
        raise RegistryError(f"{cls.__qualname__}: kinds {cls.kinds} must be a non-empty subset of {', '.join(KINDS)}")
    loose = [m for m, spec in cls.metrics.items() if not isinstance(spec, MetricSpec)]
    if loose:
        raise RegistryError(f"{cls.__qualname__}: metrics {loose} need a MetricSpec record (audit.check.higher/lower)")
    return registry.register(cls)
