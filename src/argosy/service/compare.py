"""Comparing runs (``runs diff``) and checking drift before ``runs reproduce``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from argosy import api
from argosy.engine.cache import explain
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
    return f"{impl.image} {' '.join(impl.command)}"


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
