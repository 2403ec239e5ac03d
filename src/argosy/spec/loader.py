"""Find a pipeline in a user's Python file (``path/to/file.py[:PIPELINE]``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from argosy.errors import PipelineDefinitionError, UsageError
from argosy.sdk.graph import user_location
from argosy.sdk.pipeline import Pipeline


def module_name_for(file: Path) -> tuple[str, Path]:
    """The dotted module name of ``file`` and the folder to put on ``sys.path`` to import it.

    A file inside packages (folders with ``__init__.py``) is imported under its full dotted
    name from above the top package, so its relative imports work.
    """
    parts = [file.stem]
    folder = file.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts), folder


def _what_happened(exc: BaseException) -> str:
    """The exception and where in the user's files it was raised."""
    if isinstance(exc, SyntaxError):  # located by the parser, not by a frame
        return f"{type(exc).__name__}: {exc.msg} [{exc.filename}:{exc.lineno}]"
    where = user_location(exc.__traceback__)
    at = f" [{where}]" if where else ""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while being imported{at}"
    if isinstance(exc, KeyboardInterrupt):
        return f"it was interrupted (KeyboardInterrupt) while being imported{at}"
    text = str(exc)
    return f"{type(exc).__name__}{': ' + text if text else ''}{at}"


def split_target(target: str) -> tuple[Path, str | None]:
    path, _, name = target.partition(":") if not target.startswith(":") else (target, "", "")
    return Path(path), (name or None)


def load_pipeline(target: str) -> Pipeline:
    """Import ``FILE`` and return its pipeline named ``PIPELINE`` (or its only one)."""
    path, name = split_target(target)
    if path.suffix != ".py":
        raise UsageError(f"{target!r}: expected a Python file, as FILE.py or FILE.py:PIPELINE")
    if not path.is_file():
        raise UsageError(
            f"pipeline file {str(path)!r} not found; check the path (relative to {Path.cwd()})"
        )
    file = path.resolve()
    module_name, sys_path = module_name_for(file)
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "argosy":
        raise UsageError(
            f"{path} would be imported as {top!r}, which shadows the module of that name "
            "(standard library or argosy); rename the file"
        )
    if str(sys_path) not in sys.path:
        sys.path.insert(0, str(sys_path))
    try:
        module = importlib.import_module(module_name)
    except PipelineDefinitionError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        # an import that raises, exits or is interrupted is a mistake in the file: one line,
        # exit 2 (never the exception's own exit code, which would mean something else)
        sys.modules.pop(module_name, None)
        raise PipelineDefinitionError(
            f"importing {path} failed: {_what_happened(exc)}; fix it and retry"
        ) from None
    if getattr(module, "__file__", None) and Path(module.__file__ or "").resolve() != file:
        raise UsageError(
            f"{path} is shadowed by another module named {module_name!r} "
            f"({module.__file__}); rename the file"
        )
    found = {k: v for k, v in vars(module).items() if isinstance(v, Pipeline)}
    if name is not None:
        chosen = getattr(module, name, None)
        if not isinstance(chosen, Pipeline):
            chosen = next((p for p in found.values() if p.name == name), None)
        if not isinstance(chosen, Pipeline):
            raise UsageError(
                f"{path} has no pipeline named {name!r}; pipelines there: "
                f"{', '.join(sorted(found)) or '(none)'}"
            )
        return chosen
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise UsageError(f"{path} defines no @pipeline; decorate a function with @pipeline")
    raise UsageError(
        f"{path} defines several pipelines ({', '.join(sorted(found))}); choose one as {path}:NAME"
    )
