"""Per-step fingerprints: exactly which code and which installed packages a step depends on.

The cache key and the drift check of ``runs reproduce`` compare these, component by
component, so a miss can say *what* changed ("helpers.py", "scikit-learn 1.5.0 → 1.5.1").

Code: the step function's own source, plus — found by following the names its code uses —
the source of functions and classes of its own module it calls, the repr of module-level
constants it reads, and the whole file of every project-local module it imports (directly
or through those modules' imports, transitively). Editing another step in the same file, or
a project module nothing of the step imports, does not change the fingerprint.

Packages: the installed distributions (name and version) that provide the third-party
modules the step's code and its project-local modules import, plus the Python version and
platform.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import inspect
import platform
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SIMPLE = (int, float, str, bool, bytes, type(None))


def _sha(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def _simple_value(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _SIMPLE):
        return True
    if depth < 3 and isinstance(value, list | tuple | frozenset | set):
        return all(_simple_value(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return all(
            _simple_value(k, depth + 1) and _simple_value(v, depth + 1) for k, v in value.items()
        )
    return False


def _names(code: types.CodeType) -> set[str]:
    """Global names and imported module names used by ``code`` and its nested code objects."""
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _names(const)
    return found


@dataclass
class Fingerprint:
    """Component → sha256 of the code a step depends on, and the packages it imports."""

    code: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def code_hash(self) -> str:
        joined = "\n".join(f"{k}={v}" for k, v in sorted(self.code.items()))
        return "sha256:" + _sha(joined)


class _Walker:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.fp = Fingerprint()
        self._seen_objects: set[int] = set()
        self._seen_files: set[Path] = set()
        self.third_party: set[str] = set()

    def _label(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _local(self, filename: str | None) -> Path | None:
        """``filename`` if it is a project-local Python file (not in a venv or hidden folder)."""
        if not filename:
            return None
        path = Path(filename).resolve()
        if path.suffix != ".py" or not path.is_relative_to(self.root):
            return None
        for part in path.relative_to(self.root).parts[:-1]:
            if part in ("site-packages", "dist-packages") or part.startswith("."):
                return None
        return path

    def _resolve(self, name: str, package: str | None) -> Path | None:
        """The file of module ``name`` if project-local (recording third-party tops); never imports."""
        try:
            absolute = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        except (ImportError, ValueError):
            return None
        top, _, rest = absolute.partition(".")
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.origin and not self._local(spec.origin):
            self.third_party.add(top)
            return None
        base = Path(spec.origin).parent if spec.origin else None
        if not rest:
            return self._local(spec.origin)
        if base is None:
            return None
        for candidate in (base.joinpath(*rest.split(".")).with_suffix(".py"),
                          base.joinpath(*rest.split("."), "__init__.py")):  # fmt: skip
            if candidate.is_file():
                return self._local(str(candidate))
        return None

    def _imports(self, tree: ast.AST, package: str | None) -> None:
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                names = [base] if node.module else []
                sep = "." if node.module else ""
                names += [f"{base}{sep}{a.name}" for a in node.names if a.name != "*"]
            for name in names:
                found = self._resolve(name, package)
                if found is not None:
                    self.add_file(found)

    def add_file(self, path: Path) -> None:
        """A whole project-local module, and (transitively) the project modules it imports."""
        if path in self._seen_files:
            return
        self._seen_files.add(path)
        source = path.read_bytes()
        self.fp.code[self._label(path)] = _sha(source)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return
        self._imports(tree, _package_of(path))

    def add_object(self, obj: Any) -> None:
        """A function or class of a project module: its source, and what its code uses."""
        obj = inspect.unwrap(getattr(obj, "func", None) or obj)
        if id(obj) in self._seen_objects:
            return
        self._seen_objects.add(id(obj))
        module = sys.modules.get(getattr(obj, "__module__", "") or "")
        local = self._local(getattr(module, "__file__", None))
        if module is None or local is None:
            if module is not None:
                self.third_party.add(module.__name__.split(".")[0])
            return
        try:
            source = textwrap.dedent(inspect.getsource(obj))
        except (OSError, TypeError):
            self.add_file(local)
            return
        self.fp.code[f"{self._label(local)}::{obj.__qualname__}"] = _sha(source)
        with contextlib.suppress(SyntaxError):
            self._imports(ast.parse(source), module.__package__)
        codes: list[types.CodeType] = []
        if isinstance(obj, types.FunctionType):
            codes.append(obj.__code__)
        elif isinstance(obj, type):
            codes.extend(
                v.__code__ for v in vars(obj).values() if isinstance(v, types.FunctionType)
            )
        names = sorted(set().union(*(_names(c) for c in codes))) if codes else []
        for name in names:
            if name in vars(module) and not (name.startswith("__") and name.endswith("__")):
                self._follow(name, vars(module)[name], module, local)

    def _follow(self, name: str, value: Any, module: types.ModuleType, file: Path) -> None:
        if isinstance(value, types.ModuleType):
            local = self._local(getattr(value, "__file__", None))
            if local is not None:
                self.add_file(local)
            else:
                self.third_party.add(value.__name__.split(".")[0])
            return
        target = getattr(value, "func", None) or value
        if inspect.isfunction(target) or inspect.isclass(target):
            target = inspect.unwrap(target)
            if getattr(target, "__module__", None) == module.__name__:
                self.add_object(target)
                return
            defining = sys.modules.get(getattr(target, "__module__", "") or "")
            local = self._local(getattr(defining, "__file__", None))
            if local is not None:
                self.add_file(local)
            elif defining is not None:
                self.third_party.add(defining.__name__.split(".")[0])
            return
        if _simple_value(value):
            self.fp.code[f"{self._label(file)}::{name}"] = _sha(repr(value))
            return
        defining = sys.modules.get(getattr(type(value), "__module__", "") or "")
        if defining is not None and not self._local(getattr(defining, "__file__", None)):
            self.third_party.add(defining.__name__.split(".")[0])

    def packages(self, distributions: dict[str, list[str]]) -> dict[str, str]:
        import importlib.metadata

        found: dict[str, str] = {
            "python": platform.python_version(),
            "platform": f"{sys.platform}-{platform.machine()}",
        }
        for top in sorted(self.third_party):
            if top in sys.stdlib_module_names or top in ("argosy", "builtins"):
                continue
            for dist in distributions.get(top, []):
                try:
                    found[dist.lower()] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    continue
        return found


def _package_of(path: Path) -> str | None:
    """The dotted package a file belongs to (from its ``__init__.py`` folders), if any."""
    parts: list[str] = []
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if path.name != "__init__.py" and not parts:
        return None
    return ".".join(parts) or None


_DISTRIBUTIONS: dict[str, list[str]] | None = None


def step_fingerprint(func: Any, root: Path, modules: set[str] | None = None) -> Fingerprint:
    """The fingerprint of a step function whose project lives under ``root``.

    ``modules`` adds top-level modules the step depends on without naming them in its code
    (the libraries that store its typed inputs and outputs, e.g. ``pandas``, ``pyarrow``).
    """
    global _DISTRIBUTIONS
    if _DISTRIBUTIONS is None:
        import importlib.metadata

        _DISTRIBUTIONS = {
            k: list(v) for k, v in importlib.metadata.packages_distributions().items()
        }
    walker = _Walker(root)
    walker.third_party |= modules or set()
    walker.add_object(func)
    walker.fp.packages = walker.packages(_DISTRIBUTIONS)
    return walker.fp
