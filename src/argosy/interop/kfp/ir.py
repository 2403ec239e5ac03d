"""Reading KFP v2 pipeline spec (IR) files, and the value rules both directions share.

A compiled file holds one or two YAML documents: the ``PipelineSpec`` (``pipelineInfo``,
``root``, ``components``, ``deploymentSpec``, ``schemaVersion``) and, optionally, the
``PlatformSpec`` (Kubernetes settings). Numbers are proto doubles (``9.0`` for an integer):
:func:`cast` turns them back by the declared ``parameterType``, whole numbers nested in LIST
and STRUCT values included.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from argosy.errors import PipelineDefinitionError

# KFP parameterType -> Argosy type ref
PARAMETER_TYPES = {
    "STRING": "str",
    "NUMBER_INTEGER": "int",
    "NUMBER_DOUBLE": "float",
    "BOOLEAN": "bool",
    "LIST": "list",
    "STRUCT": "dict",
    "TASK_FINAL_STATUS": "dict",
}
ARGOSY_TO_PARAMETER = {
    "str": "STRING",
    "int": "NUMBER_INTEGER",
    "float": "NUMBER_DOUBLE",
    "bool": "BOOLEAN",
    "list": "LIST",
    "dict": "STRUCT",
    "metrics": "STRUCT",
}
# the kind of executor a leaf component has
LIGHTWEIGHT, CONTAINER, IMPORTER = "lightweight", "container", "importer"
# the version of Argosy's KFP executor contract (part of every imported step's cache key)
CONTRACT_VERSION = "1"
# the input an exit task gets the group's status on when its component takes none
FINAL_STATUS = "kfp-final-status"


class KfpFileError(PipelineDefinitionError):
    """A file that is not KFP pipeline spec Argosy can read."""


def is_ir_file(path: Path) -> bool:
    """Whether a run/compile target names a KFP IR file (YAML or JSON), not a Python file."""
    return path.suffix.lower() in (".yaml", ".yml", ".json")


def read_ir(text: str, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and the platform spec (``{}`` when absent) of an IR file's text."""
    import yaml  # here: ``argosy run file.py`` asks is_ir_file and never reads YAML

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise KfpFileError(f"{source} is not valid YAML: {exc}; check the file") from None
    if not docs or not isinstance(docs[0], dict):
        raise KfpFileError(f"{source} is empty; expected a KFP pipeline spec (IR YAML)")
    spec = docs[0]
    if "pipelineSpec" in spec and "root" not in spec:  # a PipelineJob wrapper
        spec = spec["pipelineSpec"]
    missing = [k for k in ("pipelineInfo", "root") if k not in spec]
    if missing:
        raise KfpFileError(
            f"{source} has no {' or '.join(missing)}: it is not a compiled KFP pipeline; "
            "compile it with kfp.compiler.Compiler().compile(...) or run a Python pipeline "
            "file instead"
        )
    version = str(spec.get("schemaVersion", ""))
    if version and not version.startswith("2."):
        raise KfpFileError(
            f"{source} has schemaVersion {version}; Argosy reads KFP v2 pipeline spec "
            "(schemaVersion 2.x); recompile it with kfp 2"
        )
    platform = next((d for d in docs[1:] if isinstance(d, dict) and "platforms" in d), {})
    return spec, platform


def executor_kind(executor: dict[str, Any]) -> str:
    """``lightweight`` (a Python function run by ``kfp.dsl.executor_main`` from its source),
    ``container`` (an argv in an image) or ``importer``."""
    if "importer" in executor:
        return IMPORTER
    container = executor.get("container") or {}
    command = list(container.get("command") or [])
    if lightweight_source(command) is not None:
        return LIGHTWEIGHT
    return CONTAINER


def lightweight_source(command: list[str]) -> str | None:
    """The component source a lightweight component's command carries, if it is one.

    The command is ``sh -c <bootstrap> sh -ec <runner> <source>``: the runner runs
    ``kfp.dsl.executor_main --component_module_path`` on the next element.
    """
    for i, part in enumerate(command[:-1]):
        if "kfp.dsl.executor_main" in part and "--component_module_path" in part:
            return command[i + 1]
    return None


def function_name(args: list[str]) -> str | None:
    for i, part in enumerate(args[:-1]):
        if part == "--function_to_execute":
            return args[i + 1]
    return None


def _whole(value: Any) -> Any:
    """Whole-number floats as ints, inside lists and dicts too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


def cast(value: Any, parameter_type: str | None) -> Any:
    """A JSON value as its declared KFP type wants it (numbers arrive as doubles)."""
    if value is None:
        return None
    if parameter_type == "NUMBER_INTEGER":
        if isinstance(value, str):
            value = float(value.strip())
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if parameter_type == "NUMBER_DOUBLE":
        if isinstance(value, str):
            return float(value.strip())
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if parameter_type == "BOOLEAN" and isinstance(value, str):
        return value.strip().lower() == "true"
    if parameter_type in ("LIST", "STRUCT"):
        if isinstance(value, str):
            value = json.loads(value)
        return _whole(value)
    return value


def digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
