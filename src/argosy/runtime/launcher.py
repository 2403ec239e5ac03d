"""The step launcher: the only Argosy code that runs inside a task's process.

``python -m argosy.runtime.launcher INVOCATION.json`` (also the future container entrypoint);
``-`` instead of the file: the invocation comes on stdin (a server's task user cannot read
the file).

1. becomes a child subreaper, so even ``setsid``'d grandchildren stay in its tree, and
   raises its own ``oom_score_adj`` so the kernel kills it before the engine;
2. loads the code package and imports the step's function;
3. loads each input (JSON values inline; artifacts by sha256, verified, memory-mapped where
   the type allows);
4. calls the function, writes each output as a blob, then the **result record** — written to
   the artifact store, never the metadata database, so it survives an engine crash and the
   launcher needs no database credentials; where the store refuses it (a full disk, which
   also swallows the log), a compact failure record goes to the executor's status pipe
   (``status_fd``), which needs no disk;
5. kills whatever its step left running, and exits 0 (succeeded) or 1 (failed).

The invocation and the result record are :mod:`argosy.runtime.invocation`'s typed,
versioned documents. With encryption at rest the invocation also holds ``encryption`` (the
tenant's unwrapped data keys, base64 — never the key-encryption key; the file is mode 0600 in
the attempt's 0700 folder). Then every input is decrypted into ``<scratch>/.cache`` (mode
0700, removed with the attempt) instead of the shared ``cache_dir``, and outputs are encrypted
before they are stored.
It is imported by nothing heavy: startup cost is per task.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import shutil
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argosy.errors import ArgosyError, ExecutionError
from argosy.runtime import formats, processes
from argosy.runtime.invocation import FAILED, SUCCEEDED, Invocation, OutputRecord, ResultRecord
from argosy.safe_paths import check_name
from argosy.stores.artifacts.blobs import ArtifactStore, BlobInfo, open_artifact_store

# code packages a warm parent already unpacked and imported (sha256 -> folder): its forked
# children use them as they are instead of fetching and unpacking the package again
PRELOADED: dict[str, str] = {}


def _code_folder(inv: Invocation) -> Path | None:
    if inv.code is None:
        return None
    given = PRELOADED.get(inv.code.sha256)
    if given is not None:
        return Path(given)
    return Path(inv.cache_dir) / "code" / inv.code.sha256.removeprefix("sha256:")


class StepFailed(Exception):
    """The step itself failed; carries the attempt's failure reason."""

    def __init__(self, reason: str, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.exit_code = exit_code


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _import_function(inv: Invocation, store: ArtifactStore) -> Any:
    impl = inv.step["implementation"]
    code = inv.code
    if code is None:
        raise StepFailed("input_error", f"step {inv.step['name']!r} has no code package")
    from argosy.spec.code_package import extract_package

    cache = Path(inv.cache_dir)
    sha = code.sha256.removeprefix("sha256:")
    target = _code_folder(inv) or cache / "code" / sha
    if not target.is_dir():
        blob = store.blob_path(sha, cache_dir=cache / "blobs")
        target.parent.mkdir(parents=True, exist_ok=True)
        extract_package(blob, target)
    for rel in reversed(code.paths):
        sys.path.insert(0, str(target / rel))
    module = importlib.import_module(impl["module"])
    obj: Any = module
    for part in impl["function"].split("."):
        obj = getattr(obj, part)
    return getattr(obj, "func", None) or obj


def _load(inv: Invocation, store: ArtifactStore, art: dict[str, Any], scratch: Path) -> Any:
    path = store.blob_path(art["sha256"], cache_dir=Path(inv.cache_dir) / "blobs")
    return formats.read_value(
        path, art["format"], art["type"], scratch=scratch, filename=art.get("filename"),
        tenant=inv.tenant, artifact_tenant=art.get("tenant"),
    )  # fmt: skip


_JSON_CHECKS: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "metrics": lambda v: isinstance(v, dict),
}


def _check_input(inv: Invocation, name: str, value: Any, source: dict[str, Any]) -> None:
    """A JSON input must be what its annotation says; if not, say where it came from (the
    upstream output that made it, blamed by name) before the step's code sees it."""
    declared = inv.step["inputs"].get(name) or {}
    expected = declared.get("type")
    check = _JSON_CHECKS.get(expected or "")
    optional = declared.get("optional") or declared.get("required") is False
    if check is None or check(value) or (value is None and optional):
        return
    got = f"{type(value).__name__} {json.dumps(value, default=repr)[:60]}"
    step = inv.step["name"]
    if "from" in source:
        node, _, output = str(source["from"]).rpartition(".")
        # declared types were checked when the pipeline was compiled: what reaches here
        # comes from a step whose return is not annotated (stored as whatever it returned)
        raise StepFailed(
            "input_error",
            f"input {name!r} of step {step!r} expects {expected}, but output {output!r} of "
            f"{node!r} is {got}: annotate what {node!r} returns ('-> {expected}') or "
            "convert the value there",
        )
    raise StepFailed(
        "input_error",
        f"input {name!r} of step {step!r} expects {expected}, but the value given (a "
        f"parameter, a constant or a map item) is {got}; pass a {expected}",
    )


def _load_inputs(inv: Invocation, store: ArtifactStore, scratch: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, source in inv.inputs.items():
        if "value" in source:
            values[name] = source["value"]
            _check_input(inv, name, source["value"], source)
            continue
        art = source["artifact"]
        if art["format"] == "collection":  # the collected outputs of a map(): a list
            elements = json.loads(store.read_blob(art["sha256"]))
            values[name] = [
                None if e is None else _load(inv, store, e, scratch / "inputs" / name / str(i))
                for i, e in enumerate(elements)
            ]
        else:
            values[name] = _load(inv, store, art, scratch / "inputs" / check_name(name, "input"))
            if art["format"] == "json":
                _check_input(inv, name, values[name], source)
    return values


def _split_outputs(step: dict[str, Any], result: Any) -> dict[str, Any]:
    returns = step["implementation"].get("returns", "single")
    names = list(step["outputs"])
    if returns == "none" or not names:
        return {}
    if returns == "single":
        return {names[0]: result}
    missing = [n for n in names if not hasattr(result, n)]
    if missing:
        raise StepFailed(
            "output_error",
            f"step {step['name']!r} must return its declared NamedTuple/dataclass with fields "
            f"{', '.join(names)}; got {type(result).__name__} without {missing[0]!r}",
        )
    return {n: getattr(result, n) for n in names}


def _store_outputs(
    inv: Invocation, store: ArtifactStore, outputs: dict[str, Any], scratch: Path
) -> dict[str, OutputRecord]:
    step = inv.step
    out_dir = scratch / ".stored"
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, OutputRecord] = {}
    for name, value in outputs.items():
        declared = step["outputs"][name]
        what = f"output {name!r} of step {step['name']!r}"
        _warn_if_scratch_path(what, value, scratch)
        try:
            check_name(name, "output name")
            written = formats.write_value(
                value, declared["type"], declared.get("serializer"), out_dir / name, what=what
            )
            known = None
            if written.sha256 is not None and written.size is not None:
                known = BlobInfo(written.sha256, written.size)
            info = store.put_file(written.path, known, move=True, hashed_while_written=True)
        except ArgosyError as exc:
            raise StepFailed("output_error", str(exc)) from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise StepFailed("output_error", _no_space(f"output {name!r}", exc, out_dir)) from None
        records[name] = OutputRecord(
            sha256=info.sha256,
            size=info.size,
            type=written.type,
            format=written.format,
            serializer=written.serializer,
            filename=written.filename,
            json_text=written.json_text,
        )
    return records


def _no_space(what: str, exc: OSError, out_dir: Path) -> str:
    """``no space left on device while storing output 'X' (12.3 MB free on /path)``."""
    where = Path(exc.filename).parent if exc.filename else out_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = f"{shutil.disk_usage(where).free / 1e6:.1f} MB free on {where}"
    except OSError:
        free = f"free space on {where} unknown"
    return (
        f"no space left on device while storing {what} ({free}); free space there "
        "or point ARGOSY_HOME / ARGOSY_ARTIFACT_URL at a larger disk"
    )


def _warn_if_scratch_path(what: str, value: Any, scratch: Path) -> None:
    """A string naming a file the step wrote in its scratch folder (its working directory)
    outlives nothing: the folder is deleted when the attempt ends. Say so in its log."""
    if not isinstance(value, str) or not value or len(value) > 4096 or "\n" in value:
        return
    try:
        path = (scratch / value).resolve() if not os.path.isabs(value) else Path(value).resolve()
        inside = path.is_relative_to(scratch.resolve()) and path.exists()
    except (OSError, ValueError):
        return
    if inside:
        print(
            f"warning: {what} is the string {value!r}, a path in the step's scratch folder, "
            "which is deleted when the attempt ends (a cached re-run would name nothing); "
            "return a Path (annotate '-> Path') to store the file or folder as an artifact",
            file=sys.stderr,
            flush=True,
        )


def run_python(inv: Invocation, store: ArtifactStore, scratch: Path) -> dict[str, OutputRecord]:
    func = _import_function(inv, store)
    kwargs = _load_inputs(inv, store, scratch)
    try:
        result = func(**kwargs)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 0 and not inv.step["outputs"]:
            result = None
        else:
            raise StepFailed(
                "exit_code", f"the step called sys.exit({exc.code!r})", code or 1
            ) from None
    return _store_outputs(inv, store, _split_outputs(inv.step, result), scratch)


def _peak_rss() -> int | None:
    """This process's resident-memory high-water mark (VmHWM), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of the children it has waited for: what
    an executor that cannot see the process (a pod) records as the attempt's CPU time."""
    import resource

    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _user_traceback(exc: BaseException, inv: Invocation) -> str:
    """The traceback from the user's first frame on, with project-relative file names."""
    tb = exc.__traceback__
    here = str(Path(__file__).resolve().parent)
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(here) and tb.tb_next:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    snapshot = _code_folder(inv)
    if snapshot is not None:
        text = text.replace(f"{snapshot}/", "")
    return text


def _encrypting(
    inv: Invocation, store: ArtifactStore, scratch: Path
) -> tuple[Invocation, ArtifactStore]:
    """The store with the task's data keys; plaintext inputs go under the task's scratch
    (never the shared cache: it would outlive the attempt)."""
    from argosy.stores.encryption import ObjectCipher, StaticDataKeys

    assert inv.encryption is not None
    keys = StaticDataKeys.from_document(inv.encryption)
    private = scratch / ".cache"
    private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    inv = inv.completed(cache_dir=str(private), encryption=None)
    return inv, store.with_cipher(ObjectCipher(keys))


def _read_invocation(source: str) -> Invocation:
    """The invocation from a file, or from stdin (``-``: a server's task user cannot read the
    file), after which the step's stdin is empty, as elsewhere."""
    if source != "-":
        return Invocation.from_json(json.loads(Path(source).read_text()))
    doc = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return Invocation.from_json(doc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    processes.become_subreaper()
    processes.set_oom_score_adj(1000)
    if os.environ.get("ARGOSY_TASK_ISOLATED"):  # tasks share one OS user: hide from the others
        processes.set_not_dumpable()
    inv = _read_invocation(argv[0])
    if inv.status_fd is not None:  # the step's own processes need not hold the pipe open
        with contextlib.suppress(OSError):
            os.set_inheritable(inv.status_fd, False)
    store = open_artifact_store(inv.store.url, inv.tenant, inv.store.options)
    if inv.scratch is None:
        raise ExecutionError("the executor gave the invocation no scratch folder; this is a bug")
    scratch = Path(inv.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if inv.encryption:
        inv, store = _encrypting(inv, store, scratch)
    started_at = _now()
    outputs: dict[str, OutputRecord] = {}
    status, reason, error = SUCCEEDED, None, None
    exit_code = 0
    try:
        if inv.kind == "container":
            from argosy.runtime.container import run_container

            outputs = run_container(inv, store, scratch)
        elif inv.kind == "kfp":  # a step imported from Kubeflow Pipelines IR
            from argosy.interop.kfp.task import run_kfp

            outputs = run_kfp(inv, store, scratch)
        elif inv.step["implementation"].get("image"):  # a Python step in its own image
            from argosy.runtime.image_step import run_in_image

            outputs = run_in_image(inv, store, scratch)
        else:
            outputs = run_python(inv, store, scratch)
    except StepFailed as exc:
        status, reason, error = FAILED, exc.reason, str(exc)
        exit_code = exc.exit_code
    except BaseException as exc:
        with contextlib.suppress(OSError):  # a full disk: the record below still says it
            sys.stderr.write(_user_traceback(exc, inv))
        reason = "input_error" if isinstance(exc, ArgosyError) else "exception"
        status, error = FAILED, f"{type(exc).__name__}: {exc}"
        exit_code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):
                stream.flush()
    record = ResultRecord(
        attempt_id=inv.attempt_id, attempt=inv.attempt, status=status, started_at=started_at,
        finished_at=_now(), outputs=outputs, reason=reason, error=error,
        peak_memory=_peak_rss(), cpu_time=_cpu_seconds(),
    )  # fmt: skip
    # Whatever the step left running dies with the attempt (guaranteed clean-up).
    for pid in processes.descendants(os.getpid()):
        processes.kill_tree(pid)
    try:
        store.put_record(inv.result_key, record.to_json())
    except (OSError, ArgosyError) as exc:
        if inv.status_fd is None:
            raise
        why = f"the result record could not be stored: {exc}"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            why = _no_space("the result record", exc, scratch)
        if not _send_status(inv.status_fd, record.compact(why)):
            raise
        return exit_code or 1
    return exit_code


def _send_status(fd: int, record: ResultRecord) -> bool:
    """Write the compact failure record to the executor's status pipe (one JSON line; never
    blocks): False if no one reads it (an engine that died), or it is not a pipe."""
    data = json.dumps(record.to_json()).encode() + b"\n"
    try:
        os.set_blocking(fd, False)
        return os.write(fd, data) == len(data)
    except OSError:
        return False


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
