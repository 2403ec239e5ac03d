"""What each CLI command does (``main.py`` only declares arguments and imports this lazily)."""

from __future__ import annotations

import gc
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from argosy.cli.local import Local, local_secrets, open_local
from argosy.cli.progress import Progress
from argosy.config import Settings
from argosy.engine.engine import engine_alive
from argosy.engine.report import iso, run_document
from argosy.errors import NotFoundError, UsageError
from argosy.states import RUN_DONE, RunStatus
from argosy.stores.metadata import runs as q
from argosy.units import format_bytes


def _console(stderr: bool = False) -> Console:
    """A console that does not truncate tables when its output is a file or a pipe."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = 250
    return console


out = _console()
err = _console(stderr=True)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def _parse_params(items: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"parameter {item!r} is not NAME=VALUE; write it as -p rows=1000")
        values[name.strip()] = value
    return values


def run_pipeline(settings: Settings, target: str, params: list[str], *, json_output: bool) -> int:
    from argosy.spec.compile import compile_pipeline
    from argosy.spec.loader import load_pipeline
    from argosy.spec.parameters import bind_parameters
    from argosy.spec.validate import Capacity, validate_for_executor

    text_values = _parse_params(params)
    compiled = compile_pipeline(load_pipeline(target), cache_dir=settings.home / "cache")
    bound = bind_parameters(compiled.spec, text_values)
    capacity = Capacity(cpu=settings.max_cpus, memory=settings.max_memory, gpu=settings.max_gpus)
    validate_for_executor(
        compiled.spec, capacity, local_secrets(settings), str(settings.resolved_secrets_file)
    )
    local = open_local(settings)
    with Progress(err) as progress:
        engine = local.engine(on_change=progress)
        run_id = engine.submit(compiled, bound, fail_fast=settings.fail_fast)
        err.print(f"run {run_id} of pipeline {compiled.spec.name} ({compiled.spec.digest[:19]})",
                  highlight=False)  # fmt: skip
        status = _execute_interruptibly(local, engine, run_id)
    return _report(local, run_id, status, json_output)


def _execute_interruptibly(local: Local, engine: Any, run_id: str) -> RunStatus:
    """Ctrl-C (or SIGTERM) cancels the run cleanly; a second Ctrl-C stops at once."""

    def cancel(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        err.print("cancelling the run (press Ctrl-C again to stop immediately)...")
        engine.interrupted = True

    previous = {sig: signal.signal(sig, cancel) for sig in (signal.SIGINT, signal.SIGTERM)}
    gc.freeze()  # the imported modules are permanent: full collections need not scan them
    try:
        return RunStatus(engine.execute(run_id))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(local: Local, run_id: str, status: RunStatus, json_output: bool) -> int:
    with local.metadata.session() as s:
        run = q.get_run(s, local.settings.tenant, run_id)
        doc = run_document(s, local.store, run)
        outputs = q.get_spec(s, run).root.outputs
    if json_output:
        emit_json(doc)
    else:
        _print_outcome(doc, _output_paths(outputs))
    return 0 if status == RunStatus.SUCCEEDED else 1


def _output_paths(outputs: dict[str, Any]) -> dict[str, str]:
    """Pipeline output -> NODE/OUTPUT (the first branch of a one_of)."""
    paths = {}
    for name, ref in outputs.items():
        first = ref.one_of[0] if hasattr(ref, "one_of") else ref
        paths[name] = f"{first.node}/{first.output}"
    return paths


def _print_outcome(doc: dict[str, Any], spec_outputs: dict[str, str]) -> None:
    style = "green" if doc["status"] == "succeeded" else "red"
    err.print(f"run {doc['run_id']} [{style}]{doc['status']}[/]", highlight=False)
    for step in doc["steps"]:
        failed_skip = step["state"] == "skipped" and (step["reason"] or "").startswith(
            "upstream_failed"
        )
        if step["state"] in ("failed", "cancelled") or failed_skip:
            err.print(
                f"  {step['node']}: {step['state']} — {step['reason']}",
                highlight=False,
                markup=False,
            )
    if doc["status"] != "succeeded":
        err.print(f"  details: argosy runs show {doc['run_id']}; logs: argosy logs {doc['run_id']}",
                  highlight=False)  # fmt: skip
    for name, value in doc["outputs"].items():
        if isinstance(value, dict) and "artifact_id" in value:
            ref = f"{doc['run_id']}/{spec_outputs[name]}"
            print(
                f"{name} = {value['type']} artifact {value['artifact_id']} (sha256 {value['sha256'][:12]})"
            )
            print(f"    get it with: argosy artifacts get {ref} --out PATH")
        else:
            print(f"{name} = {json.dumps(value)}")


def resume_run(local: Local, ref: str, json_output: bool) -> int:
    with local.metadata.session() as s:
        run_id = q.get_run(s, local.settings.tenant, ref).id
    with Progress(err) as progress:
        engine = local.engine(on_change=progress)
        status = _execute_interruptibly(local, engine, run_id)
    return _report(local, run_id, status, json_output)


def cancel_run(local: Local, ref: str) -> None:
    with local.metadata.session() as s:
        run_id = q.get_run(s, local.settings.tenant, ref).id
    outcome = local.engine().request_cancel(run_id)
    messages = {
        "requested": f"run {run_id}: cancel requested; its engine stops the running tasks",
        "cancelled": f"run {run_id} cancelled",
    }
    err.print(
        messages.get(outcome, f"run {run_id} had already finished ({outcome.split(':')[-1]})"),
        highlight=False,
    )


def list_runs(
    local: Local, json_output: bool, limit: int, status: str | None, pipeline: str | None
) -> None:
    with local.metadata.session() as s:
        rows = q.list_runs(s, local.settings.tenant, limit=limit, status=status, pipeline=pipeline)
        docs: list[dict[str, Any]] = [
            {
                "run_id": r.id,
                "pipeline": name,
                "status": r.status,
                "engine_alive": engine_alive(r.engine) if r.status == "running" else None,
                "created_at": iso(r.created_at),
                "finished_at": iso(r.finished_at),
                "parameters": r.parameters,
            }
            for r, name in rows
        ]
    if json_output:
        emit_json({"runs": docs})
        return
    table = Table(box=None, header_style="bold")
    for col in ("run", "pipeline", "status", "created", "parameters"):
        table.add_column(col)
    for d in docs:
        table.add_row(d["run_id"], d["pipeline"], _status_text(d), (d["created_at"] or "")[:19],
                      json.dumps(d["parameters"]))  # fmt: skip
    out.print(table)


def _status_text(doc: dict[str, Any]) -> str:
    if doc["status"] == "running" and doc.get("engine_alive") is False:
        return f"running, engine gone: argosy runs resume {doc['run_id']}"
    return str(doc["status"])


def _fmt_seconds(v: float | None) -> str:
    return f"{v:.2f}s" if v is not None else ""


def show_run(local: Local, ref: str, json_output: bool) -> None:
    with local.metadata.session() as s:
        doc = run_document(s, local.store, q.get_run(s, local.settings.tenant, ref), detail=True)
    if json_output:
        emit_json(doc)
        return
    out.print(f"run {doc['run_id']}  {doc['pipeline']}  {_status_text(doc)}", highlight=False)
    out.print(
        f"version {doc['pipeline_version']}  parameters {json.dumps(doc['parameters'])}",
        highlight=False,
    )
    table = Table(box=None, header_style="bold")
    columns = ("node", "step", "state", "attempt", "cause", "reason", "wall", "cpu", "peak mem",
               "pool", "cache")  # fmt: skip
    for col in columns:
        table.add_column(col)
    for step in doc["steps"]:
        attempts = step["attempts"] or [None]
        cache = step["cache"]
        cache_text = f"{cache['status']}: {cache['reason']}" if cache["status"] else ""
        for a in attempts:
            last = a is None or a is attempts[-1]
            node = (
                step["node"]
                if step["item"] is None
                else f"{step['node']} = {json.dumps(step['item'])[:30]}"
            )
            table.add_row(
                node if a is None or a is attempts[0] else "", step["name"], step["state"] if last else "",
                str(a["number"]) if a else "", a["cause"] if a else "",
                (a["reason"] or "") if a else (step["reason"] or ""),
                _fmt_seconds(a["wall_time"]) if a else "", _fmt_seconds(a["cpu_time"]) if a else "",
                format_bytes(a["peak_memory"]) if a else "", (a["node_pool"] or "") if a else "",
                cache_text if last else "",
            )  # fmt: skip
    out.print(table)
    for step in doc["steps"]:
        if step["state"] == "failed":
            out.print(f"\n{step['node']} failed: {step['reason']}", highlight=False, markup=False)
            for line in step["log_tail"][-10:]:
                out.print(f"  | {line}", highlight=False, markup=False)
    if doc.get("metrics"):
        out.print("\nmetrics:")
        for where, values in doc["metrics"].items():
            shown = "  ".join(f"{k}={v}" for k, v in values.items())
            out.print(f"  {where}  {shown}", highlight=False, markup=False)
    if doc["outputs"]:
        out.print("\noutputs:")
        for name, value in doc["outputs"].items():
            out.print(f"  {name} = {json.dumps(value)}", highlight=False, markup=False)


def _log_lines(local: Local, attempt: Any) -> list[dict[str, Any]]:
    """A finished attempt's log from the store, or a running one's live log file."""
    stream = local.store.open_record(attempt.log_key) if attempt.log_key else None
    if stream is None:
        live = local.settings.attempts_dir / attempt.id / "log.jsonl"
        if not live.exists():
            return []
        data = live.read_bytes()
    else:
        with stream:
            data = stream.read()
    lines = []
    for raw in data.decode("utf-8", "replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def show_logs(
    local: Local,
    ref: str,
    node: str | None,
    follow: bool,
    attempt_no: int | None,
    json_output: bool,
) -> None:
    printed: dict[str, int] = {}
    while True:
        with local.metadata.session() as s:
            run = q.get_run(s, local.settings.tenant, ref)
            tasks = {t.id: t for t in q.tasks_of(s, run.id)}
            if node is not None and node not in {t.node_path for t in tasks.values()}:
                raise NotFoundError(
                    f"run {run.id} has no node {node!r}; its nodes are: "
                    + ", ".join(t.node_path for t in tasks.values())
                )
            attempts = [a for a in q.attempts_of(s, run.id)
                        if (node is None or tasks[a.task_id].node_path == node)
                        and (attempt_no is None or a.number == attempt_no)]  # fmt: skip
            done = run.status in RUN_DONE
        collected = []
        for a in attempts:
            lines = _log_lines(local, a)
            start = printed.get(a.id, 0)
            printed[a.id] = len(lines)
            for entry in lines[start:]:
                collected.append((tasks[a.task_id].node_path, a.number, entry))
        collected.sort(key=lambda c: c[2]["t"])
        entries = [
            {"node": path, "attempt": number, "time": e["t"], "stream": e["s"], "line": e["m"]}
            for path, number, e in collected
        ]
        if json_output and not follow:
            emit_json({"run_id": run.id, "lines": entries})
            return
        for e in entries:
            if json_output:  # --follow: one JSON object per line, as they come
                sys.stdout.write(json.dumps(e) + "\n")
            else:
                sys.stdout.write(f"{e['node']}#{e['attempt']} {e['time'][11:23]} {e['line']}\n")
        sys.stdout.flush()
        if not follow or done:
            return
        time.sleep(0.5)


def list_artifacts(local: Local, ref: str, json_output: bool) -> None:
    with local.metadata.session() as s:
        run = q.get_run(s, local.settings.tenant, ref)
        docs: list[dict[str, Any]] = [
            {
                "artifact_id": a.id,
                "ref": f"{run.id}/{a.node_path}/{a.output_name}",
                "node": a.node_path,
                "output": a.output_name,
                "type": a.type,
                "format": a.format,
                "sha256": a.sha256,
                "size": a.size,
                "created_at": iso(a.created_at),
            }
            for a in q.artifacts_of(s, run.id)
        ]
    if json_output:
        emit_json({"artifacts": docs})
        return
    table = Table(box=None, header_style="bold")
    for col in ("artifact", "node", "output", "type", "size", "sha256"):
        table.add_column(col)
    for d in docs:
        table.add_row(
            d["artifact_id"],
            d["node"],
            d["output"],
            d["type"],
            format_bytes(d["size"]),
            d["sha256"][:12],
        )
    out.print(table)


def get_artifact(local: Local, ref: str, dest: Path) -> None:
    with local.metadata.session() as s:
        art = q.get_artifact(s, local.settings.tenant, ref)
    if art.format == "dir":
        import tempfile

        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            tar_path = Path(tmp) / "dir.tar"
            local.store.copy_blob_to(art.sha256, tar_path)
            from argosy.safe_paths import extract_tar

            extract_tar(tar_path, dest, what=f"directory artifact {art.id}")
    else:
        if dest.is_dir():
            from argosy.safe_paths import check_name

            dest = dest / check_name(
                (art.value or {}).get("filename")
                or f"{art.node_path}.{art.output_name}.{art.format}".replace("/", "_"),
                "artifact file name",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        local.store.copy_blob_to(art.sha256, dest)
    err.print(f"wrote {art.node_path}/{art.output_name} ({art.type}, {format_bytes(art.size)}, sha256 {art.sha256[:12]}) to {dest}",
              highlight=False)  # fmt: skip


def compile_pipeline(settings: Settings, target: str, dest: Path | None) -> None:
    from argosy.spec.compile import compile_pipeline as compile_
    from argosy.spec.loader import load_pipeline

    compiled = compile_(load_pipeline(target), cache_dir=settings.home / "cache")
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
        err.print(f"wrote {compiled.spec.name} {compiled.spec.digest} to {dest}", highlight=False)


def show_lineage(local: Local, ref: str, down: bool, fmt: str) -> None:
    from argosy.engine import lineage

    with local.metadata.session() as s:
        art = q.get_artifact(s, local.settings.tenant, ref)
        tree = (lineage.downstream if down else lineage.upstream)(s, local.settings.tenant, art)
    if fmt == "json":
        emit_json(tree)
    elif fmt == "dot":
        sys.stdout.write(lineage.to_dot(tree))
    else:
        out.print(_lineage_tree(tree), highlight=False)


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
        text = f"task [cyan]{escape(d['node'])}[/] ({d['state']}) of run {d['run_id']}, {escape(d['pipeline'])} {d['pipeline_version'][:19]}"
        if d.get("cached_from_task"):
            text += f", reusing task {d['cached_from_task']}"
        if git.get("commit"):
            text += f"\ngit {git['commit'][:12]}" + (
                f" dirty (diff sha256 {git['diff_sha256'][:12]})" if git.get("dirty") else ""
            )
        if "code" in d:
            text += f"\ncode {escape(d['code']['function'])} package {d['code']['package'][:19]} fingerprint {d['code']['fingerprint'][:19]}"
            pkgs = ", ".join(f"{k} {v}" for k, v in d["environment"]["packages"].items())
            text += f"\npackages {escape(pkgs)}"
        if "image" in d:
            text += f"\nimage {escape(d['image'])}"
        return text

    shown: set[str] = set()

    def build(d: dict[str, Any], tree: Any) -> None:
        if d.get("id") in shown:
            tree.add(label(d) + " [dim](shown above)[/]")
            return
        shown.add(d["id"])
        node = tree.add(label(d))
        task = d.get("produced_by")
        if task is not None:
            t = node.add(label(task))
            for name, inp in task["inputs"].items():
                if inp["kind"] == "artifact":
                    sub = t.add(f"input {escape(name)}")
                    build(inp, sub)
                else:
                    t.add(f"input {escape(name)} {label(inp)}")
        for task in d.get("consumed_by", []):
            t = node.add(f"as input {escape(task['as_input'])} of " + label(task))
            for out_doc in task["outputs"]:
                build(out_doc, t)

    root = Tree("lineage", hide_root=True)
    build(doc, root)
    return root


def reproduce_run(local: Local, ref: str, allow_drift: bool, json_output: bool) -> int:
    from argosy.engine.compare import drift
    from argosy.spec.compile import CompiledPipeline, compile_pipeline
    from argosy.spec.loader import load_pipeline

    with local.metadata.session() as s:
        run = q.get_run(s, local.settings.tenant, ref)
        spec = q.get_spec(s, run)
        parameters = dict(run.parameters)
        original = run.id
    source = spec.provenance.source_file if spec.provenance else None
    problems: list[str]
    if not source or not Path(source).is_file():
        problems = [f"the pipeline's source file {source!r} is gone, so drift cannot be checked"]
    else:
        try:
            current = compile_pipeline(
                load_pipeline(f"{source}:{spec.name}"), cache_dir=local.settings.home / "cache"
            )
            problems = drift(spec, current.spec)
        except Exception as exc:  # the current code may not even import any more
            problems = [f"the current code does not compile: {exc}"]
    for line in problems:
        err.print(f"drift: {line}", highlight=False, markup=False)
    if problems and not allow_drift:
        raise UsageError(
            f"the code or packages differ from what run {original} recorded ({len(problems)} "
            "difference(s) above); restore them, or pass --allow-drift to reproduce anyway"
        )
    missing = [d for d in spec.code if not local.store.has_blob(d.removeprefix("sha256:"))]
    if missing:
        raise UsageError(f"the code package {missing[0]} of run {original} is no longer stored")
    with Progress(err) as progress:
        engine = local.engine(on_change=progress)
        run_id = engine.submit(
            CompiledPipeline(spec), parameters, no_cache=True, reproduce_of=original
        )
        err.print(f"run {run_id} reproduces run {original}", highlight=False)
        status = _execute_interruptibly(local, engine, run_id)
    from argosy.engine.compare import diff_runs

    with local.metadata.session() as s:
        a, b = (
            q.get_run(s, local.settings.tenant, original),
            q.get_run(s, local.settings.tenant, run_id),
        )
        comparison = diff_runs(s, local.store, a, b)
        doc = run_document(s, local.store, b)
    same = {r["key"]: r["same"] for r in comparison["outputs"]}
    if json_output:
        emit_json({**doc, "reproduces": original, "drift": problems, "identical_outputs": same})
    else:
        _print_outcome(doc, _output_paths(spec.root.outputs))
        differing = [k for k, v in same.items() if not v]
        if differing:
            err.print(
                f"outputs that differ from run {original}: {', '.join(differing)}", highlight=False
            )
        else:
            err.print(
                f"all {len(same)} outputs are byte-identical to run {original}", highlight=False
            )
    return 0 if status == RunStatus.SUCCEEDED else 1


def diff_runs(local: Local, ref_a: str, ref_b: str, json_output: bool, all_rows: bool) -> None:
    from argosy.engine.compare import diff_runs as compare

    with local.metadata.session() as s:
        a, b = (
            q.get_run(s, local.settings.tenant, ref_a),
            q.get_run(s, local.settings.tenant, ref_b),
        )
        doc = compare(s, local.store, a, b)
    if json_output:
        emit_json(doc)
        return
    table = Table(box=None, header_style="bold")
    for col in ("", "what", f"run {doc['a'][:12]}", f"run {doc['b'][:12]}", ""):
        table.add_column(col)

    def show(v: Any) -> str:
        text = v if isinstance(v, str) else json.dumps(v)
        return text[:19] + "…" if isinstance(v, str) and len(v) == 64 else text

    for section in ("parameters", "code", "packages", "inputs", "outputs", "metrics"):
        for row in doc[section]:
            if row["same"] and not all_rows and section != "metrics":
                continue
            table.add_row(
                section, row["key"], show(row["a"]), show(row["b"]), "" if row["same"] else "≠"
            )
    out.print(table)


def show_config(settings: Settings, json_output: bool) -> None:
    from argosy.config import describe

    rows = describe(settings)
    if json_output:
        emit_json({"settings": rows})
        return
    table = Table(box=None, header_style="bold")
    for col in ("setting", "value", "from"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "" if r["value"] is None else str(r["value"]), r["source"])
    out.print(table)
