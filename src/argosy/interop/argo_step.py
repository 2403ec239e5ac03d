"""The container entrypoint of a Python step exported to Argo Workflows.

``python -m argosy.interop.argo_step MODULE FUNCTION RETURNS --in=NAME=JSON ... --out=NAME``:
imports the step's function (its code is in the image, on ``PYTHONPATH``), calls it with the
JSON inputs Argo passes as parameters, and writes each output as JSON to
``/argosy/outputs/NAME`` (``ARGOSY_OUTPUTS_DIR`` to override), where Argo reads output
parameters. Only JSON values: other types need Argosy's artifact store (see ``argo.py``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a plain string parameter


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    module, function, returns, *rest = args
    inputs: dict[str, Any] = {}
    outputs: list[str] = []
    for arg in rest:
        if arg.startswith("--in="):
            name, _, text = arg.removeprefix("--in=").partition("=")
            inputs[name] = _value(text)
        elif arg.startswith("--out="):
            outputs.append(arg.removeprefix("--out="))
    obj: Any = importlib.import_module(module)
    for part in function.split("."):
        obj = getattr(obj, part)
    fn = getattr(obj, "func", None) or obj
    result = fn(**inputs)
    folder = Path(os.environ.get("ARGOSY_OUTPUTS_DIR", "/argosy/outputs"))
    folder.mkdir(parents=True, exist_ok=True)
    if returns == "none" or not outputs:
        return 0
    values = (
        {outputs[0]: result} if returns == "single" else {o: getattr(result, o) for o in outputs}
    )
    for name, value in values.items():
        (folder / name).write_text(json.dumps(value))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
