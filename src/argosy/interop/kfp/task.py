"""One KFP task in its own process: the KFP executor contract, provided by Argosy.

The launcher calls :func:`run_kfp` for a step with a ``kfp`` implementation. It

1. loads the task's inputs from the artifact store: parameters as JSON values (cast by their
   declared ``parameterType``, picked by ``parameterExpressionSelector``, placeholders in
   constant strings filled), artifacts as folders in a content-addressed cache (so the uri a
   component sees stays valid after the task, e.g. for an importer downstream);
2. builds the executor input (``{{$}}``) with pre-assigned output paths under the task's
   root ``<scratch>/kfp``;
3. runs the component: a lightweight Python component in this process with
   :mod:`argosy.interop.kfp.dsl` as ``kfp.dsl`` (no ``kfp`` install, no network); a container
   component through podman/docker with the scratch folder mounted at the same path, or its
   argv on the host when it was imported with ``ARGOSY_KFP_CONTAINERS=host``; an importer by
   copying the file or folder its uri names;
4. reads the executor output file and the parameter files and returns the outputs for the
   launcher to store: parameters as JSON, each artifact as a folder holding ``data`` (the
   file or folder) and ``kfp-artifact.json`` (name, type, metadata).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argosy.interop.kfp.ir import (
    CONTAINER,
    FINAL_STATUS,
    IMPORTER,
    LIGHTWEIGHT,
    cast,
    function_name,
)
from argosy.interop.kfp.ir import lightweight_source as source_of

if TYPE_CHECKING:
    from argosy.runtime.invocation import Invocation, OutputRecord
    from argosy.stores.artifacts.blobs import ArtifactStore

ARTIFACT_FILE = "kfp-artifact.json"
DATA = "data"
_PLACEHOLDER = re.compile(r"\{\{\$(.*?)\}\}")
_INDEXED = re.compile(r"^\.(inputs|outputs)\.(parameters|artifacts)\['([^']*)'\](?:\.(\w+))?$")
_SELECTOR = re.compile(r"^parseJson\(string_value\)((?:\[(?:\"[^\"]*\"|'[^']*'|\d+)\])*)$")
_INDEX = re.compile(r"\[(\"[^\"]*\"|'[^']*'|\d+)\]")


def _failed(reason: str, message: str, exit_code: int = 1) -> Exception:
    from argosy.runtime.launcher import StepFailed

    return StepFailed(reason, message, exit_code)


def as_text(value: Any) -> str:
    """A parameter value as a placeholder puts it in argv (``5``, ``true``, JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def parse_text(text: str, parameter_type: str | None) -> Any:
    """An output parameter written as a file, read by its declared type."""
    if parameter_type in (None, "", "STRING"):
        return text
    stripped = text.strip()
    if parameter_type == "BOOLEAN":
        return stripped.lower() == "true"
    if parameter_type == "NUMBER_INTEGER":
        return cast(float(stripped) if "." in stripped else int(stripped), parameter_type)
    if parameter_type == "NUMBER_DOUBLE":
        return float(stripped)
    return cast(json.loads(stripped), parameter_type)


def select(value: Any, selector: str) -> Any:
    """``parseJson(string_value)["A_a"]``: a field of a JSON value (or of its text)."""
    if selector.strip() == "string_value":
        return as_text(value)
    m = _SELECTOR.match(selector.strip())
    if m is None:
        raise _failed("input_error", f"input selector {selector!r} is not supported")
    current = json.loads(value) if isinstance(value, str) else value
    for part in _INDEX.findall(m.group(1)):
        key: Any = part[1:-1] if part[0] in "'\"" else int(part)
        current = current[key]
    return current


class _Artifact:
    """An input artifact, extracted into the content-addressed cache."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = folder / ARTIFACT_FILE
        self.doc: dict[str, Any] = json.loads(meta.read_text()) if meta.is_file() else {}
        data = folder / DATA
        self.path = data if meta.is_file() else folder

    def entry(self, name: str) -> dict[str, Any]:
        return {
            "name": self.doc.get("name") or name,
            "type": self.doc.get("type")
            or {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"},
            "uri": str(self.path),
            "metadata": self.doc.get("metadata") or {},
        }


class KfpTask:
    """One attempt of one KFP task: inputs in, component run, outputs out."""

    def __init__(self, inv: Invocation, store: ArtifactStore, scratch: Path) -> None:
        self.inv = inv
        self.store = store
        self.scratch = scratch
        impl = inv.step["implementation"]
        self.executor: dict[str, Any] = impl["executor"]
        self.component: dict[str, Any] = impl.get("component") or {}
        self.task: dict[str, Any] = impl.get("task") or {}
        self.name = str(self.task.get("name") or inv.step["name"])
        self.root = scratch / "kfp"
        self.root.mkdir(parents=True, exist_ok=True)
        declared_in = self.component.get("inputDefinitions") or {}
        declared_out = self.component.get("outputDefinitions") or {}
        self.in_params: dict[str, Any] = declared_in.get("parameters") or {}
        self.in_artifacts: dict[str, Any] = declared_in.get("artifacts") or {}
        self.out_params: dict[str, Any] = declared_out.get("parameters") or {}
        self.out_artifacts: dict[str, Any] = declared_out.get("artifacts") or {}
        self.params: dict[str, Any] = {}
        self.artifacts: dict[str, list[dict[str, Any]]] = {}
        self.executor_input: dict[str, Any] = {}

    # -- inputs -------------------------------------------------------------------------------
    def _extract(self, sha256: str) -> Path:
        from argosy.safe_paths import extract_tar

        cache = Path(self.inv.cache_dir)
        target = cache / "kfp-artifacts" / sha256.removeprefix("sha256:")
        if not target.is_dir():
            blob = self.store.blob_path(sha256, cache_dir=cache / "blobs")
            tmp = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            extract_tar(blob, tmp, what="KFP artifact")
            try:
                os.rename(tmp, target)
            except OSError:  # another task extracted it first
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _load(self, art: dict[str, Any]) -> Any:
        fmt = art.get("format")
        sha = art["sha256"]
        if fmt == "collection":
            elements = json.loads(self.store.read_blob(sha))
            return [None if e is None else self._load(e) for e in elements]
        if fmt == "json":
            return json.loads(self.store.read_blob(sha))
        if fmt == "dir":
            return _Artifact(self._extract(sha))
        if fmt == "file":
            folder = (
                Path(self.inv.cache_dir) / "kfp-artifacts" / f"file-{sha.removeprefix('sha256:')}"
            )
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                self.store.copy_blob_to(sha, folder / (art.get("filename") or DATA))
            return _Artifact(folder)
        raise _failed("input_error", f"KFP task {self.name!r} cannot read a {fmt} input")

    def _context(self) -> dict[str, str]:
        inv = self.inv
        pipeline = str(self.task.get("pipeline") or "pipeline")
        job = f"{pipeline}-{inv.run_id}".lower()
        workspace = Path(inv.cache_dir) / "kfp-workspaces" / inv.run_id
        return {
            "pipeline_job_name": job,
            "pipeline_job_resource_name": job,
            "pipeline_job_uuid": inv.run_id,
            "pipeline_task_name": self.name,
            "pipeline_task_uuid": inv.attempt_id,
            "pipeline_root": inv.store.url,
            "pipeline_job_create_time_utc": datetime.now(UTC).isoformat(),
            "pipeline_job_schedule_time_utc": datetime.now(UTC).isoformat(),
            "workspace_path": str(workspace),
        }

    def _final_status(self, value: Any) -> dict[str, Any]:
        """Argosy's exit-handler view of the group as KFP's ``PipelineTaskFinalStatus``."""
        if isinstance(value, dict) and "state" in value:
            return value
        group = value if isinstance(value, dict) else {}
        state = {"succeeded": "SUCCEEDED", "failed": "FAILED", "cancelled": "CANCELED"}.get(
            str(group.get("status")), "SUCCEEDED"
        )
        failed = [
            f"{p}: {t.get('reason') or t.get('state')}"
            for p, t in (group.get("tasks") or {}).items()
            if t.get("state") in ("failed", "cancelled")
        ]
        job = self._context()["pipeline_job_resource_name"]
        return {
            "state": state,
            "pipelineJobResourceName": job,
            "pipelineTaskName": self.name,
            "error": {"code": 0 if state == "SUCCEEDED" else 2, "message": "; ".join(failed)},
        }

    def load_inputs(self) -> None:
        selectors: dict[str, str] = self.task.get("selectors") or {}
        templated = set(self.task.get("templated") or [])
        status_input = self.task.get("status_input")
        raw: dict[str, Any] = {}
        for name, source in self.inv.inputs.items():
            if "value" in source:
                raw[name] = source["value"]
            else:
                raw[name] = self._load(source["artifact"])
        for name, value in raw.items():
            if name == FINAL_STATUS and name != status_input:
                continue  # the group's status, handed to an exit task that takes none
            if name in self.in_artifacts:
                listed = value if isinstance(value, list) else [value]
                docs = [a.entry(name) for a in listed if isinstance(a, _Artifact)]
                if docs:
                    self.artifacts[name] = docs
                continue
            if isinstance(value, _Artifact):
                raise _failed("input_error", f"input {name!r} of KFP task {self.name!r} is a "
                              "parameter but got an artifact")  # fmt: skip
            if isinstance(value, list) and any(isinstance(v, _Artifact) for v in value):
                raise _failed("input_error", f"input {name!r} of KFP task {self.name!r} is a "
                              "parameter but got a list of artifacts")  # fmt: skip
            if value is None:
                continue  # not supplied (an optional input without a default)
            if name == status_input:
                self.params[name] = self._final_status(value)
                continue
            if name in selectors:
                value = select(value, selectors[name])
            self.params[name] = cast(value, (self.in_params.get(name) or {}).get("parameterType"))
        context = self._context()
        for name in templated & set(self.params):
            self.params[name] = self.fill(self.params[name], context)

    def fill(self, text: str, context: dict[str, str] | None = None) -> str:
        """Every ``{{$...}}`` in ``text`` replaced (input values, paths, run-level values)."""
        context = context or self._context()

        def one(m: re.Match[str]) -> str:
            return self.placeholder(m.group(1), context)

        return _PLACEHOLDER.sub(one, text)

    def placeholder(self, expr: str, context: dict[str, str]) -> str:
        if expr == "":
            return json.dumps(self.executor_input)
        if expr == ".outputs.output_file":
            return str(self.executor_input["outputs"]["outputFile"])
        if expr.startswith(".") and expr[1:] in context:
            return context[expr[1:]]
        m = _INDEXED.match(expr)
        if m is None:
            raise _failed("input_error", f"KFP task {self.name!r}: placeholder {{{{${expr}}}}} "
                          "is not supported")  # fmt: skip
        side, kind, name, attr = m.groups()
        if side == "inputs" and kind == "parameters":
            if name not in self.params:
                raise _failed("input_error", f"KFP task {self.name!r}: placeholder of input "
                              f"{name!r}, which has no value")  # fmt: skip
            return as_text(self.params[name])
        if side == "outputs" and kind == "parameters":
            return str(self.executor_input["outputs"]["parameters"][name]["outputFile"])
        where = self.executor_input[side]["artifacts"].get(name)
        if not where:
            raise _failed("input_error", f"KFP task {self.name!r}: placeholder of artifact "
                          f"{name!r}, which was not given")  # fmt: skip
        art = where["artifacts"][0]
        if attr in ("path", None):
            from argosy.interop.kfp.dsl import uri_to_path

            return uri_to_path(art["uri"])
        if attr == "uri":
            return str(art["uri"])
        if attr == "metadata":
            return json.dumps(art.get("metadata") or {})
        raise _failed("input_error", f"KFP task {self.name!r}: placeholder {{{{${expr}}}}} is "
                      "not supported")  # fmt: skip

    def build_executor_input(self) -> None:
        outputs: dict[str, Any] = {
            "parameters": {
                n: {"outputFile": str(self.root / "parameters" / n)} for n in self.out_params
            },
            "artifacts": {
                n: {
                    "artifacts": [
                        {
                            "name": n,
                            "type": a.get("artifactType") or {"schemaTitle": "system.Artifact"},
                            "uri": str(self.root / "artifacts" / n),
                            "metadata": {},
                        }
                    ]
                }
                for n, a in self.out_artifacts.items()
            },
            "outputFile": str(self.root / "executor_output.json"),
        }
        for doc in outputs["parameters"].values():  # KFP's launcher makes these folders too
            Path(doc["outputFile"]).parent.mkdir(parents=True, exist_ok=True)
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        self.executor_input = {
            "inputs": {
                "parameterValues": dict(self.params),
                "artifacts": {n: {"artifacts": docs} for n, docs in self.artifacts.items()},
            },
            "outputs": outputs,
        }

    # -- running ------------------------------------------------------------------------------
    def run_lightweight(self) -> None:
        from argosy.interop.kfp import dsl

        container = self.executor.get("container") or {}
        source = source_of(list(container.get("command") or []))
        function = function_name(list(container.get("args") or []))
        if source is None or function is None:
            raise _failed("input_error", f"KFP task {self.name!r}: no component source or "
                          "--function_to_execute in its executor")  # fmt: skip
        dsl.install()
        module_file = self.root / "ephemeral_component.py"
        module_file.write_text(source)
        spec = importlib.util.spec_from_file_location("ephemeral_component", module_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["ephemeral_component"] = module
        spec.loader.exec_module(module)
        func = getattr(module, function, None)
        if func is None:
            raise _failed("input_error", f"KFP task {self.name!r}: its source defines no "
                          f"function {function!r}")  # fmt: skip
        try:
            dsl.execute(func, self.executor_input)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if code != 0:
                raise _failed(
                    "exit_code", f"the component called sys.exit({exc.code!r})", code
                ) from None

    def argv(self, parts: list[Any]) -> list[str]:
        """Command or args with placeholders resolved (Concat and IfPresent included)."""
        out: list[str] = []
        for part in parts:
            out.extend(self._expand(part))
        return out

    def _structured(self, part: Any) -> Any:
        if isinstance(part, str) and part.lstrip().startswith("{"):
            try:
                doc = json.loads(part)
            except ValueError:
                return None
            if (
                isinstance(doc, dict)
                and len(doc) == 1
                and next(iter(doc)) in ("Concat", "IfPresent")
            ):
                return doc
        if isinstance(part, dict):
            return part
        return None

    def _expand(self, part: Any) -> list[str]:
        doc = self._structured(part)
        if doc is None:
            return [self.fill(str(part))]
        if "Concat" in doc:
            return ["".join("".join(self._expand(p)) for p in doc["Concat"])]
        body = doc["IfPresent"]
        name = body["InputName"]
        present = name in self.params or name in self.artifacts
        chosen = body.get("Then") if present else body.get("Else")
        if chosen is None:
            return []
        if not isinstance(chosen, list):
            chosen = [chosen]
        return [s for p in chosen for s in self._expand(p)]

    def run_container(self) -> None:
        from argosy.runtime.container import container_engine, container_name

        container = self.executor.get("container") or {}
        image = str(container.get("image", ""))
        command = self.argv(list(container.get("command") or []))
        args = self.argv(list(container.get("args") or []))
        step = self.inv.step
        if self.task.get("on_host"):
            argv = [*command, *args]
            if not argv:
                raise _failed("container_error", f"KFP container component {self.name!r} has no "
                              "command to run on the host")  # fmt: skip
            if argv[0] in ("sh", "/bin/sh") and shutil.which("bash"):
                argv[0] = "bash"  # the images' sh (busybox ash, bash) accepts [[ ]]; dash does not
            elif argv[0] in ("python", "python3"):
                argv[0] = sys.executable  # this environment's Python (Argosy's, on the host)
            proc = subprocess.run(argv, cwd=self.root, check=False)
        else:
            engine = container_engine()  # ARGOSY_CONTAINER_ENGINE, else podman, else docker
            if not engine:
                raise _failed(
                    "container_error",
                    f"KFP container component {self.name!r} (image {image}) needs podman or "
                    "docker, and neither is on PATH; install one, or import the pipeline with "
                    "ARGOSY_KFP_CONTAINERS=host to run its command on this machine",
                )
            run = [engine, "run", "--rm", "--name", container_name(self.inv.attempt_id),
                   "-v", f"{self.scratch}:{self.scratch}", "-w", str(self.root)]  # fmt: skip
            inputs = Path(self.inv.cache_dir) / "kfp-artifacts"
            if self.artifacts and inputs.is_dir():  # input artifacts, at the paths given
                run += ["-v", f"{inputs}:{inputs}:ro"]
            resources = step.get("resources") or {}
            if resources.get("memory"):
                run += ["--memory", str(resources["memory"])]
            for name in [*step.get("env", {}), *step.get("secrets", [])]:
                if name in os.environ:
                    run += ["-e", name]
            if command:
                run += ["--entrypoint", command[0], image, *command[1:], *args]
            else:
                run += [image, *args]
            proc = subprocess.run(run, check=False)
        if proc.returncode != 0:
            raise _failed("exit_code", f"the KFP container component {self.name!r} exited with "
                          f"{proc.returncode}", proc.returncode)  # fmt: skip

    def run_importer(self) -> dict[str, Any]:
        from argosy.interop.kfp.dsl import uri_to_path

        spec = self.executor["importer"]
        source = spec.get("artifactUri") or {}
        if "constant" in source:
            uri = source["constant"]
            uri = uri.get("stringValue", "") if isinstance(uri, dict) else str(uri)
        else:
            uri = str(self.params.get(str(source.get("runtimeParameter", "uri")), ""))
        uri = self.fill(uri)
        local = Path(uri_to_path(uri))
        if not local.exists():
            raise _failed(
                "input_error",
                f"importer {self.name!r}: {uri!r} is not a file or folder on this machine; Argosy "
                "imports local paths (or file:// uris) only — copy the data here first",
            )
        metadata = json.loads(self.fill(json.dumps(spec.get("metadata") or {})))
        folder = self.scratch / "kfp-out" / "artifact"
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"name": "artifact", "type": spec.get("typeSchema") or {}, "metadata": metadata}
        (folder / ARTIFACT_FILE).write_text(json.dumps(doc, sort_keys=True))
        if local.is_dir():
            shutil.copytree(local, folder / DATA, symlinks=False)
        else:
            shutil.copyfile(local, folder / DATA)
        return {"artifact": folder}

    # -- outputs ------------------------------------------------------------------------------
    def collect(self) -> dict[str, Any]:
        from argosy.interop.kfp.dsl import uri_to_path

        output_file = Path(self.executor_input["outputs"]["outputFile"])
        doc = json.loads(output_file.read_text() or "{}") if output_file.is_file() else {}
        values = doc.get("parameterValues") or {}
        found: dict[str, Any] = {}
        for name, p in self.out_params.items():
            kind = p.get("parameterType")
            path = Path(self.executor_input["outputs"]["parameters"][name]["outputFile"])
            if name in values:
                found[name] = cast(values[name], kind)
            elif path.is_file():
                try:
                    found[name] = parse_text(path.read_text(), kind)
                except ValueError as exc:
                    raise _failed("output_error", f"output {name!r} of KFP task {self.name!r} "
                                  f"is not a {kind}: {exc}") from None  # fmt: skip
            else:
                raise _failed(
                    "output_error",
                    f"KFP task {self.name!r} did not write its output parameter {name!r} "
                    f"(not in the executor output, no file at {path})",
                )
        for name, a in self.out_artifacts.items():
            given = ((doc.get("artifacts") or {}).get(name) or {}).get("artifacts") or []
            assigned = self.executor_input["outputs"]["artifacts"][name]["artifacts"][0]
            entry = given[0] if given else assigned
            data = Path(entry.get("custom_path") or uri_to_path(str(entry.get("uri") or "")))
            folder = self.scratch / "kfp-out" / name
            folder.mkdir(parents=True, exist_ok=True)
            record = {
                "name": entry.get("name") or name,
                "type": a.get("artifactType") or {},
                "metadata": entry.get("metadata") or {},
            }
            (folder / ARTIFACT_FILE).write_text(json.dumps(record, sort_keys=True))
            if data.exists():
                shutil.move(str(data), folder / DATA)
            elif str(entry.get("uri", "")).startswith(("gs://", "s3://", "minio://", "oci://")):
                raise _failed("output_error", f"KFP task {self.name!r} reported artifact {name!r} "
                              f"at {entry.get('uri')}, which is not on this machine")  # fmt: skip
            found[name] = folder
        return found


def run_kfp(inv: Invocation, store: ArtifactStore, scratch: Path) -> dict[str, OutputRecord]:
    """Run one attempt of a KFP task; the launcher's entry point for ``kind: kfp`` steps."""
    from argosy.runtime.launcher import _store_outputs

    task = KfpTask(inv, store, scratch)
    task.load_inputs()
    task.build_executor_input()
    kind = task.task.get("kind")
    if kind == IMPORTER:
        outputs = task.run_importer()
    else:
        if kind == LIGHTWEIGHT:
            task.run_lightweight()
        elif kind == CONTAINER:
            task.run_container()
        else:
            raise _failed("input_error", f"KFP task {task.name!r} has an unknown kind {kind!r}")
        outputs = task.collect()
    return _store_outputs(inv, store, outputs, scratch)
