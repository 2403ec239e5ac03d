"""Comparing runs (``runs diff``; 2-10 runs or the iterations of a mapped node for the web
UI) and checking drift before ``runs reproduce``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from argosy import api
from argosy.engine.cache import explain
from argosy.errors import NotFoundError, UsageError
from argosy.service.context import ServiceContext
from argosy.service.documents import artifact_value
from argosy.spec.fingerprint import Fingerprint
from argosy.spec.models import ContainerImplementation, PipelineSpec, PythonImplementation, StepSpec
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Run


def _step_parts(step: StepSpec) -> dict[str, Any]:
    impl = step.implementation
    if isinstance(impl, ContainerImplementation):
        return {"code": {"image": impl.image, "command": " ".join(impl.command)}, "packages": {}}
    return {"code": dict(impl.code_fingerprint), "packages": dict(impl.packages)}


def drift(recorded: PipelineSpec, current: PipelineSpec) -> list[str]:
    """How the current code and environment differ from what a run recorded, per step."""
    found: list[str] = []
    for name in sorted(set(recorded.steps) | set(current.steps)):
        if name not in current.steps:
            found.append(f"step {name}: no longer in the pipeline")
        elif name not in recorded.steps:
            found.append(f"step {name}: new in the pipeline")
        else:
            changes = explain(_step_parts(current.steps[name]), _step_parts(recorded.steps[name]))
            found.extend(f"step {name}: {c}" for c in changes)
    return found


def _code_hash(step: StepSpec | None) -> str | None:
    if step is None:
        return None
    impl = step.implementation
    if isinstance(impl, PythonImplementation):
        return Fingerprint(code=dict(impl.code_fingerprint)).code_hash
    if isinstance(impl, ContainerImplementation):
        return f"{impl.image} {' '.join(impl.command)}"
    import hashlib
    import json

    text = json.dumps(impl.model_dump(mode="json"), sort_keys=True)  # e.g. a KFP executor
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def diff(ctx: ServiceContext, ref_a: str, ref_b: str) -> api.RunDiff:
    """Two runs side by side: parameters, code, packages, input data, outputs, metrics."""
    with ctx.metadata.session() as session:
        a, b = q.get_run(session, ctx.tenant, ref_a), q.get_run(session, ctx.tenant, ref_b)
        return api.RunDiff.model_validate(diff_runs(session, ctx.store, a, b))


def diff_runs(session: Session, store: ArtifactStore, a: Run, b: Run) -> dict[str, Any]:
    """Side-by-side parameters, code, packages, input data, outputs and metrics of two runs."""
    spec_a, spec_b = q.get_spec(session, a), q.get_spec(session, b)
    rows: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("parameters", "code", "packages", "inputs", "outputs", "metrics")
    }

    def add(section: str, key: str, va: Any, vb: Any) -> None:
        rows[section].append({"key": key, "a": va, "b": vb, "same": va == vb})

    for name in sorted(set(a.parameters) | set(b.parameters)):
        add("parameters", name, a.parameters.get(name), b.parameters.get(name))
    tasks_a = {t.node_path: t for t in q.tasks_of(session, a.id)}
    tasks_b = {t.node_path: t for t in q.tasks_of(session, b.id)}
    nodes = list(dict.fromkeys([*tasks_a, *tasks_b]))
    for node in nodes:
        sa = spec_a.steps.get(tasks_a[node].step_name) if node in tasks_a else None
        sb = spec_b.steps.get(tasks_b[node].step_name) if node in tasks_b else None
        add("code", node, _code_hash(sa), _code_hash(sb))
        pa = (
            dict(sa.implementation.packages)
            if sa and isinstance(sa.implementation, PythonImplementation)
            else {}
        )
        pb = (
            dict(sb.implementation.packages)
            if sb and isinstance(sb.implementation, PythonImplementation)
            else {}
        )
        for pkg in sorted(set(pa) | set(pb)):
            if pa.get(pkg) != pb.get(pkg):
                add("packages", f"{node} {pkg}", pa.get(pkg), pb.get(pkg))
        ia = (tasks_a[node].inputs or {}) if node in tasks_a else {}
        ib = (tasks_b[node].inputs or {}) if node in tasks_b else {}
        for key in sorted(set(ia) | set(ib)):

            def data(i: dict[str, Any] | None) -> Any:
                if not i:
                    return None
                return i["artifact"]["sha256"] if "artifact" in i else i.get("value")

            add("inputs", f"{node}.{key}", data(ia.get(key)), data(ib.get(key)))
    arts_a = {(x.node_path, x.output_name): x for x in q.artifacts_of(session, a.id)}
    arts_b = {(x.node_path, x.output_name): x for x in q.artifacts_of(session, b.id)}
    for pair in list(dict.fromkeys([*arts_a, *arts_b])):
        xa, xb = arts_a.get(pair), arts_b.get(pair)
        add("outputs", f"{pair[0]}.{pair[1]}", xa.sha256 if xa else None, xb.sha256 if xb else None)
        if (xa or xb) and "metrics" in ((xa.type if xa else ""), (xb.type if xb else "")):
            ma = (artifact_value(xa, store) if xa else None) or {}
            mb = (artifact_value(xb, store) if xb else None) or {}
            for metric in sorted(set(ma) | set(mb)):
                add("metrics", f"{pair[0]}.{pair[1]}.{metric}", ma.get(metric), mb.get(metric))
    return {"a": a.id, "b": b.id, **rows}


# -- many runs, or the iterations of one mapped node (the web UI's comparison) -----------------
MAX_COMPARED = 10
LOWER_IS_BETTER = ("loss", "error", "rmse", "mse", "mae", "mape", "perplexity", "fp", "fn")


def _better_low(metric: str) -> bool:
    last = metric.rsplit(".", 1)[-1].lower()
    return any(last == w or last.endswith(("_" + w, w + "_")) for w in LOWER_IS_BETTER)


def _rows(table: dict[str, list[Any]], *, metrics: bool = False) -> list[api.ComparisonRow]:
    rows = []
    for key, values in table.items():
        best: int | None = None
        numbers = [
            (v, i) for i, v in enumerate(values)
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]  # fmt: skip
        if metrics and len(numbers) >= 2 and len({v for v, _ in numbers}) > 1:
            best = (min if _better_low(key) else max)(numbers, key=lambda p: p[0])[1]
        same = all(v == values[0] for v in values)
        rows.append(api.ComparisonRow(key=key, values=values, same=same, best=best))
    return rows


def _comparison(
    kind: str, columns: list[api.ComparisonColumn], sections: dict[str, dict[str, list[Any]]]
) -> api.Comparison:
    rows = {k: _rows(v, metrics=k == "metrics") for k, v in sections.items()}
    return api.Comparison.model_validate({"kind": kind, "columns": columns, **rows})


def _input_value(recorded: dict[str, Any] | None) -> Any:
    if not recorded:
        return None
    if "artifact" in recorded:
        return "sha256:" + str(recorded["artifact"].get("sha256", ""))[:12]
    return recorded.get("value")


def compare_runs(ctx: ServiceContext, refs: list[str]) -> api.Comparison:
    """2-10 runs side by side: parameters, each node's code fingerprint and input values or
    hashes, output hashes and metrics (``UsageError`` for fewer or more)."""
    if not 2 <= len(refs) <= MAX_COMPARED:
        raise UsageError(
            f"compare 2 to {MAX_COMPARED} runs ({len(refs)} given); pick them in the run list"
        )
    with ctx.metadata.session() as session:
        runs = [q.get_run(session, ctx.tenant, ref) for ref in refs]
        n = len(runs)
        sections: dict[str, dict[str, list[Any]]] = {
            k: {} for k in ("parameters", "code", "inputs", "outputs", "metrics")
        }

        def put(section: str, key: str, i: int, value: Any) -> None:
            sections[section].setdefault(key, [None] * n)[i] = value

        for i, run in enumerate(runs):
            for name, value in sorted((run.parameters or {}).items()):
                put("parameters", name, i, value)
            spec = q.get_spec(session, run)
            for t in q.tasks_of(session, run.id):
                put("code", t.node_path, i, _short(_code_hash(spec.steps.get(t.step_name))))
                for key, recorded in sorted((t.inputs or {}).items()):
                    put("inputs", f"{t.node_path}.{key}", i, _input_value(recorded))
            for a in q.artifacts_of(session, run.id):
                put("outputs", f"{a.node_path}.{a.output_name}", i, "sha256:" + a.sha256[:12])
                if a.type == "metrics":
                    for metric, value in sorted((artifact_value(a, ctx.store) or {}).items()):
                        put("metrics", f"{a.node_path}.{a.output_name}.{metric}", i, value)
        columns = [api.ComparisonColumn(label=r.id, run_id=r.id, status=r.status) for r in runs]
    return _comparison("runs", columns, sections)


def _short(code: str | None) -> str | None:
    return code[:19] if code and code.startswith("sha256:") else code


def compare_iterations(ctx: ServiceContext, ref: str, node: str) -> api.Comparison:
    """The iterations ``NODE[0]``, ``NODE[1]``, ... of a mapped node of one run side by side:
    the item each was given, its inputs, code, outputs and metrics."""
    import re

    pattern = re.compile(re.escape(node) + r"\[(\d+)\]$")
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, ref)
        spec = q.get_spec(session, run)
        found = sorted(
            ((int(m.group(1)), t) for t in q.tasks_of(session, run.id)
             if (m := pattern.match(t.node_path))),
            key=lambda pair: pair[0],
        )  # fmt: skip
        if len(found) < 2:
            raise NotFoundError(
                f"run {run.id} has no mapped node {node!r} with two or more iterations; open "
                "the run page and pick a node marked with its iteration count"
            )
        if len(found) > 50:
            found = found[:50]
        tasks = [t for _, t in found]
        n = len(tasks)
        index = {t.id: i for i, t in enumerate(tasks)}
        sections: dict[str, dict[str, list[Any]]] = {
            k: {} for k in ("parameters", "code", "inputs", "outputs", "metrics")
        }

        def put(section: str, key: str, i: int, value: Any) -> None:
            sections[section].setdefault(key, [None] * n)[i] = value

        for i, t in enumerate(tasks):
            put("parameters", "item", i, (t.item or {}).get("value"))
            put("code", t.step_name, i, _short(_code_hash(spec.steps.get(t.step_name))))
            for key, recorded in sorted((t.inputs or {}).items()):
                put("inputs", key, i, _input_value(recorded))
        for a in q.artifacts_of(session, run.id):
            i = index.get(a.task_id, -1)
            if i < 0:
                continue
            put("outputs", a.output_name, i, "sha256:" + a.sha256[:12])
            if a.type == "metrics":
                for metric, value in sorted((artifact_value(a, ctx.store) or {}).items()):
                    put("metrics", f"{a.output_name}.{metric}", i, value)
        columns = [
            api.ComparisonColumn(
                label=t.node_path, run_id=run.id, node_path=t.node_path, status=t.state
            )
            for t in tasks
        ]
    return _comparison("iterations", columns, sections)
