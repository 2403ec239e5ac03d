"""What each CLI command does, written once against the backend protocol
(:mod:`argosy.client.backend`): the same code acts on the local state folder and on a server,
and ``--output json`` prints the same document (:mod:`argosy.api`) in both homes.

``main.py`` only declares arguments and imports this lazily. Results go to stdout (one JSON
document with ``--output json``), progress and messages to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from argosy import api
from argosy.cli import render
from argosy.cli.progress import Progress
from argosy.client.backend import Backend
from argosy.config import Settings
from argosy.errors import ConflictError, UsageError
from argosy.units import format_bytes

INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


# Results on stdout fit the width they are read at (render.py: COLUMNS, else the terminal;
# unbounded in a pipe or with --wide); messages on stderr are never cut.
LAYOUT = render.layout_for(sys.stdout)
out = render.console_for(False, LAYOUT.width)
err = Console(stderr=True, soft_wrap=True)


def use_wide() -> None:
    """``--wide``: show every value in full, whatever the width."""
    global LAYOUT, out
    LAYOUT = render.Layout(None)
    out = render.console_for(False, None)


def _clip(text: str, room: int | None = None) -> str:
    return LAYOUT.clip(text, room)


def emit_json(doc: Any) -> None:
    """One JSON document on stdout (pydantic documents as the API writes them)."""
    if isinstance(doc, BaseModel):
        doc = doc.model_dump(mode="json")
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def parse_params(items: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"parameter {item!r} is not NAME=VALUE; write it as -p rows=1000")
        values[name.strip()] = value
    return values


class Rows:
    """A table's rows, rendered when printed so that it fits the width (long cells of the
    ``flexible`` columns are cut first, with ``…``); columns left all empty are not shown."""

    def __init__(self, *columns: str, flexible: tuple[str, ...] = ()) -> None:
        self.columns = columns
        self.flexible = flexible
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(["" if c is None else str(c) for c in cells])

    def __rich__(self) -> Any:
        keep = [
            i for i, c in enumerate(self.columns)
            if c == self.columns[0] or any(r[i] for r in self.rows) or not self.rows
        ]  # fmt: skip
        return render.table(
            LAYOUT, [self.columns[i] for i in keep], [[r[i] for i in keep] for r in self.rows],
            self.flexible,
        )  # fmt: skip


def table_of(*columns: str, flexible: tuple[str, ...] = ()) -> Rows:
    return Rows(*columns, flexible=flexible)


def _hint(backend: Backend) -> str:
    """What to add to a suggested command so that it acts where this one did."""
    return f" --server {backend.server_url}" if backend.server_url else ""


def iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def _say(text: str) -> None:
    err.print(text, highlight=False, markup=False)


# -- pipelines ---------------------------------------------------------------------------------
def compile_target(settings: Settings, target: str) -> Any:
    from argosy.interop.kfp.ir import is_ir_file

    if is_ir_file(Path(target)):  # a pipeline compiled by the Kubeflow Pipelines SDK
        from argosy.interop.kfp.load import load_file

        imported = load_file(Path(target))
        for note in imported.notes:
            _say(f"note: {note}")
        return imported.compiled
    cache_dir = settings.home / "cache"

    def compile_now() -> Any:  # imported here: a cache hit needs neither
        from argosy.spec.compile import compile_pipeline
        from argosy.spec.loader import load_pipeline

        return compile_pipeline(load_pipeline(target), cache_dir=cache_dir)

    if not settings.compile_cache:
        return compile_now()
    from argosy.spec.compile_cache import compile_cached

    return compile_cached(target, cache_dir, compile_now)


def compile_to(settings: Settings, target: str, dest: Path | None) -> None:
    compiled = compile_target(settings, target)
    doc = compiled.spec.model_dump(mode="json")
    if dest is not None and dest.suffix == ".json":
        text = json.dumps(doc, indent=2) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False)
    if dest is None:
        sys.stdout.write(text)
    else:
        dest.write_text(text)
        _say(f"wrote {compiled.spec.name} {compiled.spec.digest} to {dest}")


def push_pipeline(
    backend: Backend,
    settings: Settings,
    target: str,
    version: str | None,
    json_output: bool,
    allow_unpinned: bool = False,
) -> None:
    """Compile here, pin its container images by digest (``argosy.lock.json``), store the
    blobs, then the spec as a version."""
    from argosy.ops.images import pin_compiled

    compiled = pin_compiled(compile_target(settings, target), allow_unpinned)
    pushed = backend.push_pipeline(compiled, version)
    if json_output:
        emit_json(pushed)
        return
    v = pushed.version
    tags = f" (tags: {', '.join(v.tags)})" if v.tags else ""
    what = "new version" if pushed.created else "already there"
    if not pushed.created and pushed.tag_added and version:
        what += f", now also tagged {version}"
    print(f"pipeline {v.pipeline} version {v.digest}{tags}: {what}")


def list_pipelines(backend: Backend, json_output: bool) -> None:
    pipelines = backend.list_pipelines()
    if json_output:
        emit_json({"pipelines": [p.model_dump(mode="json") for p in pipelines]})
        return
    table = table_of("pipeline", "latest version", "tags", "created", "by",
                     flexible=("pipeline", "tags", "by"))  # fmt: skip
    for p in pipelines:
        latest = p.latest_version
        table.add_row(
            p.name, latest.digest[:19] if latest else "", ", ".join(latest.tags) if latest else "",
            iso(p.created_at), p.created_by,
        )  # fmt: skip
    out.print(table)


def list_versions(backend: Backend, pipeline: str, json_output: bool) -> None:
    versions = backend.list_versions(pipeline)
    if json_output:
        emit_json({"versions": [v.model_dump(mode="json") for v in versions]})
        return
    table = table_of("version", "digest", "tags", "created", "by")
    for v in versions:
        table.add_row(v.id, v.digest, ", ".join(v.tags), iso(v.created_at), v.created_by)
    out.print(table)


# -- runs --------------------------------------------------------------------------------------
def run_pipeline(
    backend: Backend,
    settings: Settings,
    target: str,
    params: list[str],
    *,
    version: str | None = None,
    fail_fast: bool = False,
    no_cache: bool = False,
    detach: bool = False,
    wait: bool = False,
    json_output: bool = False,
    quiet: bool = False,
    file_params: dict[str, Any] | None = None,
    labels: api.RunLabels | None = None,
) -> int:
    """Compile, push, create a run, then follow it to its end (progress and the steps' output
    on stderr unless ``wait``; ``quiet``: no step output) and report it; exit code 0 only if
    it succeeded. ``file_params`` (from ``--param-file``) are overridden by ``-p`` values."""
    from argosy.spec.parameters import bind_parameters

    if not detach:
        backend.prewarm()  # a local run's first step need not start a fresh interpreter
    compiled = compile_target(settings, target)
    text = parse_params(params)
    typed = {k: v for k, v in (file_params or {}).items() if k not in text}
    parameters = bind_parameters(compiled.spec, text, typed)
    run = backend.submit(
        compiled, parameters, version=version, fail_fast=fail_fast, no_cache=no_cache,
        labels=labels,
    )  # fmt: skip
    on = f" on {backend.server_url}" if backend.server_url else ""
    _say(f"run {run.id} of pipeline {run.pipeline} ({run.digest[:19]}){on}")
    if detach:
        backend.detach(run.id)
        if json_output:
            emit_json(run)
        else:
            print(run.id)
        return 0
    return follow_run(backend, run.id, progress=not wait, json_output=json_output, quiet=quiet)


def follow_run(
    backend: Backend, run_id: str, *, progress: bool, json_output: bool, quiet: bool = False
) -> int:
    """Follow a run to its end, then report it (exit code: 0 only if it succeeded); with
    progress, the steps' output is shown as it comes unless ``quiet``."""
    try:
        if progress:
            with Progress(err) as shown:
                shown.run_id = run_id
                if quiet:
                    backend.follow(run_id, shown)
                else:
                    _follow_with_step_output(backend, run_id, shown)
        else:
            backend.follow(run_id)
    except KeyboardInterrupt:
        if backend.server_url:  # locally the second Ctrl-C has said what it did
            _say(
                f"stopped following; run {run_id} is still running on the server; cancel it "
                f"with: argosy runs cancel {run_id}{_hint(backend)}"
            )
        return INTERRUPTED
    return report(backend, backend.run_detail(run_id), json_output)


def _follow_with_step_output(backend: Backend, run_id: str, shown: Progress) -> None:
    """``backend.follow`` while a thread passes the steps' log lines to ``shown`` as they are
    written (best effort: a failure to read them never fails the run's command)."""
    import threading

    stop = threading.Event()

    def pump() -> None:
        try:
            for line in backend.follow_logs(run_id):
                if stop.is_set():
                    return
                shown.log(line)
        except Exception as exc:  # live output is a convenience: never fail the command
            if not stop.is_set():
                _say(f"(the steps' output is no longer shown live: {exc})")
            return

    reader = threading.Thread(target=pump, name=f"argosy-logs-{run_id}", daemon=True)
    reader.start()
    try:
        backend.follow(run_id, shown)
        # the last lines, written just before the run ended: the run is over, so reading
        # them ends; a long wait only if the machine is very busy
        reader.join(timeout=30)
    finally:
        stop.set()
        shown.flush_held()


def report(backend: Backend, doc: api.RunDetail, json_output: bool) -> int:
    """A finished run: failures on stderr, the pipeline's outputs on stdout."""
    if json_output:
        emit_json(doc)
    else:
        style = "green" if doc.status == "succeeded" else "red"
        err.print(f"run {doc.id} [{style}]{doc.status}[/]", highlight=False)
        for t in doc.tasks:
            failed_skip = t.state == "skipped" and (t.reason or "").startswith("upstream_failed")
            if t.state in ("failed", "cancelled") or failed_skip:
                _say(f"  {t.node_path}: {t.state} — {t.reason}")
        if doc.error:
            _say(f"  {doc.error}")
        if doc.status != "succeeded":
            hint = _hint(backend)
            _say(f"  details: argosy runs show {doc.id}{hint}; logs: argosy logs {doc.id}{hint}")
        for line in _output_lines(backend, doc.outputs):
            print(line)
    return 0 if doc.status == "succeeded" else 1


def _output_lines(backend: Backend, outputs: dict[str, api.ArtifactRef]) -> list[str]:
    """The pipeline's outputs: small JSON values inline, other artifacts with the command
    that downloads them."""
    lines = []
    for name, ref in outputs.items():
        if ref.value is not None:
            lines.append(f"{name} = {json.dumps(ref.value)}")
        else:
            lines.append(
                f"{name} = {ref.type} artifact {ref.artifact_id} (sha256 {ref.sha256[:12]})"
            )
            lines.append(
                f"    get it with: argosy artifacts get {ref.ref} --out PATH{_hint(backend)}"
            )
    return lines


def _status_text(run: api.Run) -> str:
    if run.status == "running" and run.engine_alive is False:
        return f"running, engine gone: argosy runs resume {run.id}"
    if run.status == "running" and run.cancel_requested:
        return "running, cancel requested"
    return run.status


def list_runs(
    backend: Backend,
    json_output: bool,
    limit: int,
    status: str | None,
    pipeline: str | None,
    name: str | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    runs = backend.list_runs(pipeline=pipeline, status=status, limit=limit, name=name, tags=tags)
    if json_output:
        emit_json({"runs": [r.model_dump(mode="json") for r in runs]})
        return
    home = _state_folder(backend)
    if home is not None and home != Path.cwd().resolve() / ".argosy":
        # one line, cut to the width like the table (--wide: in full)
        out.print(_clip(f"runs in the state folder {home}"), highlight=False, markup=False)
    table = table_of("run", "name", "pipeline", "status", "created", "parameters", "tags",
                     flexible=("name", "pipeline", "status", "parameters", "tags"))  # fmt: skip
    for r in runs:
        table.add_row(
            r.id, r.name or "", r.pipeline, _status_text(r), iso(r.created_at)[:19],
            json.dumps(r.parameters), " ".join(f"{k}={v}" for k, v in r.tags.items()),
        )  # fmt: skip
    out.print(table)


def _state_folder(backend: Backend) -> Path | None:
    """The local state folder the backend acts on (None on a server)."""
    from argosy.client.local import LocalBackend

    return backend.settings.home.resolve() if isinstance(backend, LocalBackend) else None


def _seconds(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else ""


def show_run(backend: Backend, ref: str, json_output: bool) -> None:
    doc = backend.run_detail(ref)
    if json_output:
        emit_json(doc)
        return
    out.print(_clip(f"run {doc.id}  {doc.pipeline}  {_status_text(doc)}"), markup=False)
    out.print(_clip(f"version {doc.digest}"), markup=False)
    out.print(_clip(f"parameters {json.dumps(doc.parameters)}"), markup=False)
    links = [f"retry of {doc.retry_of}"] if doc.retry_of else []
    links += [f"reproduces {doc.reproduce_of}"] if doc.reproduce_of else []
    links += [f"schedule {doc.schedule}"] if doc.schedule else []
    if links:
        out.print("  ".join(links), highlight=False, markup=False)
    table = table_of(
        "node", "step", "state", "attempt", "wall", "cpu", "peak mem", "pool", "cache", "reason",
        flexible=("node", "step", "reason"),
    )  # fmt: skip
    for t in doc.tasks:
        attempts: list[api.Attempt | None] = list(t.attempts) or [None]
        node = t.node_path if t.item is None else f"{t.node_path} = {json.dumps(t.item)}"
        for a in attempts:
            last = a is None or a is attempts[-1]
            number = (
                "" if a is None else str(a.number) + ("" if a.cause == "first" else f" {a.cause}")
            )
            # the reason column: why the attempt ended, else why the task is as it is, else
            # what the cache decided (a hit names the task it reuses; a miss what changed)
            reason = (a.reason or "") if a else (t.reason or "")
            if last and not reason and t.cache.reason:
                reason = t.cache.reason
            table.add_row(
                node if a is None or a is attempts[0] else "", t.step, t.state if last else "",
                number, _seconds(a.wall_time) if a else "", _seconds(a.cpu_time) if a else "",
                format_bytes(a.peak_memory) if a and a.peak_memory is not None else "",
                (a.node_pool or "") if a else "", (t.cache.status or "") if last else "", reason,
            )  # fmt: skip
    out.print(table)
    for t in doc.tasks:
        if t.state == "failed":
            out.print(_clip(f"\n{t.node_path} failed: {t.reason}"), markup=False)
            for line in t.log_tail[-10:]:
                out.print(_clip(f"  | {line}"), markup=False)
    if doc.error:
        out.print(_clip(f"\nerror: {doc.error}"), markup=False)
    if doc.metrics:
        out.print("\nmetrics:")
        items = {t.node_path: t.item for t in doc.tasks if t.item is not None}
        for where, values in doc.metrics.items():
            node = where.rsplit(".", 1)[0]
            shown = "  ".join(f"{k}={v}" for k, v in (values or {}).items())
            item = f"  (item {json.dumps(items[node])})" if node in items else ""
            out.print(_clip(f"  {where}  {shown}{item}"), markup=False)
    if doc.outputs:
        out.print("\noutputs:")
        for line in _output_lines(backend, doc.outputs):
            out.print(_clip(f"  {line}"), markup=False)


def cancel_run(backend: Backend, ref: str) -> None:
    """Ask for the run to stop; a run that already finished is left as it is (exit 0)."""
    try:
        run, outcome = backend.cancel_run(ref)
    except ConflictError as exc:
        _say(str(exc))
        return
    if outcome == "already_cancelled":
        _say(f"run {run.id} had already been cancelled")
    elif outcome == "cancelled" or run.status == "cancelled":
        _say(f"run {run.id} cancelled")
    else:
        _say(f"run {run.id}: cancel requested; its engine stops the running tasks")


def retry_run(backend: Backend, ref: str, *, follow: bool, json_output: bool) -> int:
    """A new run reusing the original's succeeded tasks; locally it is executed here."""
    run = backend.retry_run(ref)
    _say(f"run {run.id} retries run {ref} (its succeeded tasks are reused)")
    if not follow:
        if json_output:
            emit_json(run)
        else:
            print(run.id)
        return 0
    return follow_run(backend, run.id, progress=True, json_output=json_output)


def resume_run(backend: Backend, ref: str, json_output: bool) -> int:
    run = backend.resume_run(ref)
    return follow_run(backend, run.id, progress=True, json_output=json_output)


def reproduce_run(
    backend: Backend, settings: Settings, ref: str, allow_drift: bool, json_output: bool
) -> int:
    """Check the current code against what the run recorded, re-run it with caching off,
    and compare the outputs."""
    from argosy.service.compare import drift

    spec = backend.run_spec(ref)
    original = backend.get_run(ref).id
    source = spec.provenance.source_file if spec.provenance else None
    problems: list[str]
    if not source or not Path(source).is_file():
        problems = [
            f"the pipeline's source file {source!r} is not here, so drift cannot be checked"
        ]
    else:
        try:
            problems = drift(spec, compile_target(settings, f"{source}:{spec.name}").spec)
        except Exception as exc:  # the current code may not even import any more
            problems = [f"the current code does not compile: {exc}"]
    for line in problems:
        _say(f"drift: {line}")
    if problems and not allow_drift:
        raise UsageError(
            f"the code or packages differ from what run {original} recorded ({len(problems)} "
            "difference(s) above); restore them, or pass --allow-drift to reproduce anyway"
        )
    run = backend.reproduce_run(original)
    _say(f"run {run.id} reproduces run {original}")
    try:
        with Progress(err) as shown:
            backend.follow(run.id, shown)
    except KeyboardInterrupt:
        _say(f"stopped following run {run.id}")
        return INTERRUPTED
    comparison = backend.diff_runs(original, run.id)
    doc = backend.run_detail(run.id)
    same = {r.key: r.same for r in comparison.outputs}
    if json_output:
        emit_json({**doc.model_dump(mode="json"), "drift": problems, "identical_outputs": same})
    else:
        report(backend, doc, False)
        differing = [k for k, v in same.items() if not v]
        if differing:
            _say(f"outputs that differ from run {original}: {', '.join(differing)}")
        else:
            _say(f"all {len(same)} outputs are byte-identical to run {original}")
    return 0 if doc.status == "succeeded" else 1


DIFF_SECTIONS = ("parameters", "metrics", "outputs", "inputs", "code", "packages")


def diff_sections(only: str | None) -> tuple[str, ...]:
    """``--only params,metrics``: the sections asked for, in the order the table shows them."""
    if not only:
        return DIFF_SECTIONS
    asked = {"params" if w.strip() == "parameters" else w.strip() for w in only.split(",")}
    known = {"params" if s == "parameters" else s for s in DIFF_SECTIONS}
    unknown = sorted(asked - known - {""})
    if unknown:
        raise UsageError(
            f"--only {only!r}: no section {unknown[0]!r}; sections are: {', '.join(sorted(known))}"
        )
    return tuple(s for s in DIFF_SECTIONS if ("params" if s == "parameters" else s) in asked)


def diff_runs(
    backend: Backend,
    ref_a: str,
    ref_b: str,
    json_output: bool,
    all_rows: bool,
    only: str | None = None,
) -> None:
    """What differs first (parameters, metrics, outputs, inputs, code, packages), then the
    metrics that are the same (everything with ``--all``); map iterations carry their item."""
    sections = diff_sections(only)
    doc = backend.diff_runs(ref_a, ref_b)
    if json_output:
        emit_json(doc)
        return
    items: dict[str, Any] = {}
    order: dict[str, int] = {}  # node path -> place in plan order (the documents' order)
    for ref in (ref_a, ref_b):
        for t in backend.run_detail(ref).tasks:
            order.setdefault(t.node_path, len(order))
            if t.item is not None:
                items.setdefault(t.node_path, t.item)

    def node_of(key: str) -> str | None:
        found = [n for n in order if key == n or key.startswith((n + ".", n + " "))]
        return max(found, key=len) if found else None

    def label(key: str) -> str:
        node = node_of(key)
        return key if node not in items else f"{key} (item {json.dumps(items[node])})"

    def placed(row: Any) -> int:
        node = node_of(row.key)
        return -1 if node is None else order[node]

    def show(v: Any) -> str:
        text = v if isinstance(v, str) else json.dumps(v)
        return text[:19] + "…" if isinstance(v, str) and len(v) == 64 else text

    table = table_of("", "what", f"run {doc.a[:12]}", f"run {doc.b[:12]}", "",
                     flexible=("what", f"run {doc.a[:12]}", f"run {doc.b[:12]}"))  # fmt: skip
    rows = {s: sorted(getattr(doc, s), key=placed) for s in sections}  # stable: keys stay
    differing = [(s, r) for s in sections for r in rows[s] if not r.same]
    same = [(s, r) for s in sections for r in rows[s] if r.same and (all_rows or s == "metrics")]
    for section, row in [*differing, *same]:
        table.add_row(section, label(row.key), show(row.a), show(row.b), "" if row.same else "≠")
    out.print(table)


# -- logs --------------------------------------------------------------------------------------
def _log_entry(line: api.LogLine) -> str:
    return f"{line.node_path}#{line.attempt} {line.time[11:23]} {line.line}\n"


def show_logs(
    backend: Backend,
    ref: str,
    node: str | None,
    follow: bool,
    attempt: int | None,
    json_output: bool,
) -> None:
    if not follow:
        lines = backend.logs(ref, node=node, attempt=attempt)
        if json_output:
            emit_json(api.RunLogs(run_id=backend.get_run(ref).id, lines=lines))
            return
        _write_lines(lines, json_lines=False)
        return
    _write_lines(backend.follow_logs(ref, node=node, attempt=attempt), json_lines=json_output)


def _write_lines(lines: Iterable[api.LogLine], *, json_lines: bool) -> None:
    for line in lines:
        if json_lines:  # --follow --output json: one JSON object per line, as they come
            sys.stdout.write(line.model_dump_json() + "\n")
        else:
            sys.stdout.write(_log_entry(line))
        sys.stdout.flush()


# -- artifacts ---------------------------------------------------------------------------------
def list_artifacts(backend: Backend, ref: str, json_output: bool) -> None:
    artifacts = backend.list_artifacts(ref)
    if json_output:
        emit_json({"artifacts": [a.model_dump(mode="json") for a in artifacts]})
        return
    table = table_of("artifact", "node", "output", "type", "size", "sha256",
                     flexible=("node", "output", "type"))  # fmt: skip
    for a in artifacts:
        table.add_row(a.id, a.node_path, a.output_name, a.type, format_bytes(a.size), a.sha256[:12])
    out.print(table)


def get_artifact(backend: Backend, ref: str, dest: Path) -> None:
    """The artifact's bytes at ``dest`` (hash verified); a directory artifact unpacked there."""
    art = backend.get_artifact(ref)
    if art.format == "collection":
        _get_collection(backend, art, dest)
        return
    if art.format == "dir":
        import tempfile

        from argosy.safe_paths import extract_tar

        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            tar_path = Path(tmp) / "dir.tar"
            backend.download(art, tar_path)
            extract_tar(tar_path, dest, what=f"directory artifact {art.id}")
    else:
        if dest.is_dir():
            from argosy.safe_paths import check_name

            dest = dest / check_name(
                art.filename or f"{art.node_path}.{art.output_name}.{art.format}".replace("/", "_"),
                "artifact file name",
            )
        backend.download(art, dest)
    _say(
        f"wrote {art.node_path}/{art.output_name} ({art.type}, {format_bytes(art.size)}, "
        f"sha256 {art.sha256[:12]}) to {dest}"
    )


def _get_collection(backend: Backend, art: api.Artifact, dest: Path) -> None:
    """A map's collected output: a JSON list of the values when every element is JSON, else
    a folder with one file per element (``0.parquet``, ``1.parquet``, ...) in item order."""
    import tempfile

    if art.value is None:
        with tempfile.TemporaryDirectory() as tmp:
            backend.download(art, Path(tmp) / "manifest.json")
            manifest = json.loads((Path(tmp) / "manifest.json").read_text())
        by_sha = {
            a.sha256: a
            for a in backend.list_artifacts(art.run_id)
            if a.node_path.startswith(f"{art.node_path}[") and a.format != "collection"
        }
        elements = [by_sha.get((e or {}).get("sha256", "")) for e in manifest]
        missing = sum(1 for e in elements if e is None)
        if missing:
            raise UsageError(
                f"{missing} of the {len(manifest)} elements of {art.ref} have no artifact in "
                f"run {art.run_id}; list them with: argosy artifacts list {art.run_id}"
            )
        found = [e for e in elements if e is not None]
        if all(e.format == "json" for e in found):
            values = []
            with tempfile.TemporaryDirectory() as tmp:
                for i, e in enumerate(found):
                    backend.download(e, Path(tmp) / f"{i}.json")
                    values.append(json.loads((Path(tmp) / f"{i}.json").read_text()))
            art = art.model_copy(update={"value": values})
        else:
            dest.mkdir(parents=True, exist_ok=True)
            for i, e in enumerate(found):
                backend.download(e, dest / f"{i}.{e.format}")
            _say(
                f"wrote the {len(found)} elements of {art.ref} to {dest}/ (0.{found[0].format}, ...)"
            )
            return
    if dest.is_dir():
        dest = dest / f"{art.node_path}.{art.output_name}.json".replace("/", "_")
    dest.write_text(json.dumps(art.value) + "\n")
    _say(f"wrote {art.node_path}/{art.output_name} (a list of {len(art.value)} values) to {dest}")


def upload(backend: Backend, path: Path, json_output: bool) -> None:
    """Store a local file or folder where runs read it; a run given the same path as a
    parameter then reads these bytes (on a server: without sending them again)."""
    if not path.exists():
        raise UsageError(f"{str(path)!r} does not exist; give a file or a folder to upload")
    done = backend.upload(path)
    if json_output:
        emit_json(done)
        return
    print(f"sha256:{done.sha256}")
    _say(
        f"stored {path} ({done.format}, {format_bytes(done.size)}) in {backend.where}; "
        f"pass it to a run as -p NAME={path}"
    )


def show_lineage(backend: Backend, ref: str, down: bool, fmt: str) -> None:
    from argosy.service import lineage

    doc = backend.lineage(ref, "down" if down else "up")
    if fmt == "json":
        emit_json(doc)
    elif fmt == "dot":
        sys.stdout.write(lineage.to_dot(doc.artifact))
    else:
        out.print(_lineage_tree(doc.artifact), highlight=False)


def _lineage_tree(doc: dict[str, Any]) -> Any:
    from rich.markup import escape
    from rich.tree import Tree

    def label(d: dict[str, Any]) -> str:
        if d["kind"] == "artifact":
            return f"[bold]{escape(d['ref'])}[/] {escape(d['type'])} sha256 {d['sha256'][:12]}"
        if d["kind"] == "file":
            return f"file {escape(str(d['source']))} sha256 {d['sha256'][:12]}"
        if d["kind"] == "value":
            return f"= {escape(json.dumps(d['value']))}"
        git = d.get("git") or {}
        text = (
            f"task [cyan]{escape(d['node_path'])}[/] ({d['state']}) of run {d['run_id']}, "
            f"{escape(d['pipeline'])} {d['digest'][:19]}"
        )
        if d.get("cached_from_task"):
            text += f", reusing task {d['cached_from_task']}"
        if git.get("commit"):
            text += f"\ngit {git['commit'][:12]}" + (
                f" dirty (diff sha256 {git['diff_sha256'][:12]})" if git.get("dirty") else ""
            )
        if "code" in d:
            code = d["code"]
            text += (
                f"\ncode {escape(code['function'])} package {code['package'][:19]} "
                f"fingerprint {code['fingerprint'][:19]}"
            )
            pkgs = ", ".join(f"{k} {v}" for k, v in d["environment"]["packages"].items())
            text += f"\npackages {escape(pkgs)}"
        if "image" in d:
            text += f"\nimage {escape(d['image'])}"
        return text

    shown: set[str] = set()

    def add(parent: Any, markup: str, depth: int) -> Any:
        """Add a label at ``depth`` (1: no guide), each of its lines cut to fit beside the
        tree's guides (4 columns a level)."""
        from rich.text import Text

        lines = Text.from_markup(markup).split("\n")
        if LAYOUT.width is not None:
            room = max(LAYOUT.width - 4 * (depth - 1), 12)
            for line in lines:
                line.truncate(room, overflow="ellipsis")
        return parent.add(Text("\n").join(lines))

    def build(d: dict[str, Any], tree: Any, depth: int) -> None:
        if d.get("id") in shown:
            add(tree, label(d) + " [dim](shown above)[/]", depth)
            return
        shown.add(d["id"])
        node = add(tree, label(d), depth)
        task = d.get("produced_by")
        if task is not None:
            t = add(node, label(task), depth + 1)
            for name, inp in task["inputs"].items():
                if inp["kind"] == "artifact":
                    build(inp, add(t, f"input {escape(name)}", depth + 2), depth + 3)
                else:
                    add(t, f"input {escape(name)} {label(inp)}", depth + 2)
        for task in d.get("consumed_by", []):
            t = add(node, f"as input {escape(task['as_input'])} of " + label(task), depth + 1)
            for out_doc in task["outputs"]:
                build(out_doc, t, depth + 2)

    root = Tree("lineage", hide_root=True)
    build(doc, root, 1)
    return root


# -- configuration and schemas -----------------------------------------------------------------
def show_config(settings: Settings, json_output: bool) -> None:
    from argosy.config import describe

    rows = describe(settings)
    if json_output:
        emit_json({"settings": rows})
        return
    table = table_of("setting", "value", "from", flexible=("value",))
    for r in rows:
        table.add_row(r["name"], "" if r["value"] is None else str(r["value"]), r["source"])
    out.print(table)
