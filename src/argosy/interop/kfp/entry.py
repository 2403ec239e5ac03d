"""The container entrypoint of a Python step exported as a KFP component.

``python -m argosy.interop.kfp.entry --executor_input '{{$}}' --module M --function F
--returns single|fields|none`` runs inside the image CI built (the project's code and Argosy
installed): it reads the KFP executor input, calls the step's function with the parameter
values and the artifacts (read by Argosy's formats, as recorded in their metadata), and writes
the KFP executor output: JSON outputs as ``parameterValues``, the others as files at their
artifact paths (Argosy's formats: Parquet, ``.npy``, files, joblib when asked) with
``argosy_type``/``argosy_format`` metadata for the next step.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from argosy.interop.kfp.dsl import uri_to_path

KFP_TENANT = "kfp"  # the tenant Argosy's formats see inside a KFP pipeline


def _function(module: str, function: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in function.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "func", None) or obj


def _read(artifact: dict[str, Any], scratch: Path) -> Any:
    from argosy.runtime.formats import read_value

    meta = artifact.get("metadata") or {}
    path = Path(uri_to_path(str(artifact.get("uri", ""))))
    if "argosy_format" not in meta:  # made by a KFP component: its file or folder
        return path
    fmt, ref = str(meta["argosy_format"]), str(meta.get("argosy_type", "path"))
    # a pickled artifact (joblib) loads only where it was written: KFP's store is per namespace
    return read_value(path, fmt, ref, scratch=scratch, filename=path.name, tenant=KFP_TENANT,
                      artifact_tenant=meta.get("argosy_tenant"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="argosy.interop.kfp.entry")
    parser.add_argument("--executor_input", required=True)
    parser.add_argument("--module", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--returns", default="single")
    parser.add_argument(
        "--types", default="{}", help="output name -> [Argosy type, serializer] (JSON)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    executor_input = json.loads(args.executor_input)
    inputs = executor_input.get("inputs") or {}
    outputs = executor_input.get("outputs") or {}
    root = Path(outputs["outputFile"]).parent
    kwargs: dict[str, Any] = dict(inputs.get("parameterValues") or {})
    for name, listed in (inputs.get("artifacts") or {}).items():
        found = listed.get("artifacts") or []
        values = [_read(a, root / "inputs" / name / str(i)) for i, a in enumerate(found)]
        kwargs[name] = values[0] if len(values) == 1 else values
    result = _function(args.module, args.function)(**kwargs)
    types: dict[str, list[str | None]] = json.loads(args.types)
    names = [*(outputs.get("parameters") or {}), *(outputs.get("artifacts") or {})]
    ordered = list(types) or names
    if args.returns == "none" or not ordered:
        produced: dict[str, Any] = {}
    elif args.returns == "single":
        produced = {ordered[0]: result}
    else:
        produced = {n: getattr(result, n) for n in ordered}
    doc: dict[str, Any] = {"parameterValues": {}, "artifacts": {}}
    for name, value in produced.items():
        if name in (outputs.get("parameters") or {}):
            doc["parameterValues"][name] = value
            continue
        from argosy.runtime.formats import write_value

        art = outputs["artifacts"][name]["artifacts"][0]
        path = Path(uri_to_path(art["uri"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        ref, serializer = (types.get(name) or ["any", None])[:2]
        written = write_value(value, ref or "any", serializer, path, what=f"output {name!r}")
        if written.path != path:
            written.path.replace(path)
        metadata = {"argosy_type": written.type, "argosy_format": written.format,
                    "argosy_tenant": KFP_TENANT}  # fmt: skip
        doc["artifacts"][name] = {
            "artifacts": [{"name": name, "uri": art["uri"], "metadata": metadata}]
        }
    Path(outputs["outputFile"]).parent.mkdir(parents=True, exist_ok=True)
    Path(outputs["outputFile"]).write_text(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
