"""The step cache: when a task may reuse an earlier task's outputs, and why (not).

A task's cache key is the sha256 of these components (RFC 8785 canonical JSON):

- ``code``: the step's code fingerprint (function source, the project modules it uses —
  see ``spec/fingerprint.py``); for a container step, its image and command;
- ``packages``: Python version, platform and the versions of the distributions it imports,
  and the step's own packages (``@step(packages=[...])``);
- ``artifacts``: the sha256 of every input artifact (upstream outputs, imported files);
- ``values``: every JSON input value (parameters, constants, defaults);
- ``outputs``: the declared output types and serializers;
- ``env``: the environment variables the step sets (``@step(env=...)``);
- ``cache_version``: the step's declared cache version;
- ``tenant``: caches never cross tenants.

A hit needs an earlier ``succeeded`` (or ``cached``) task with the same key in the tenant,
younger than ``cache_ttl`` when one is set, whose output blobs all still exist.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import rfc8785
from sqlalchemy import select
from sqlalchemy.orm import Session

from argosy.spec.models import ContainerImplementation, StepSpec
from argosy.states import TaskState
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Artifact, Task


def components(
    step: StepSpec, inputs: dict[str, Any], tenant: str, *, image_id: str | None = None
) -> dict[str, Any]:
    """What the cache key of a task with these resolved inputs is made of.

    ``image_id``: for a container step (or a Python step in an image), the id of the local
    image its reference points at now.
    """
    impl = step.implementation
    if isinstance(impl, ContainerImplementation):
        code: dict[str, str] = {
            "image": impl.image,
            "image_id": image_id or "(not pulled)",
            "command": json.dumps(impl.command),
        }
        packages: dict[str, str] = {}
    else:
        code, packages = dict(impl.code_fingerprint), dict(impl.packages)
        requirements = getattr(impl, "requirements", None)
        if requirements:  # the step's own environment: its packages are part of the key
            packages["(step packages)"] = ";".join(requirements)
        image = getattr(impl, "image", None)
        if image:  # a Python step in an image: the image is its environment
            packages["(image)"] = image
            packages["(image id)"] = image_id or "(not pulled)"
    artifacts = {k: v["artifact"]["sha256"] for k, v in inputs.items() if "artifact" in v}
    values = {k: v["value"] for k, v in inputs.items() if "value" in v}
    return {
        "code": code,
        "packages": packages,
        "artifacts": artifacts,
        "values": values,
        "outputs": {k: o.model_dump(mode="json") for k, o in step.outputs.items()},
        "env": dict(step.env),
        "cache_version": step.cache_version,
        "tenant": tenant,
    }


def key_of(parts: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(rfc8785.dumps(parts)).hexdigest()


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def explain(now: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """What changed between two tasks' key components, one phrase per change."""
    changes: list[str] = []
    code_now, code_before = now.get("code", {}), before.get("code", {})
    edited = sorted(
        k for k in set(code_now) | set(code_before) if code_now.get(k) != code_before.get(k)
    )
    if edited:
        changes.append("code changed: " + ", ".join(edited))
    pk_now, pk_before = now.get("packages", {}), before.get("packages", {})
    for name in sorted(set(pk_now) | set(pk_before)):
        if pk_now.get(name) != pk_before.get(name):
            changes.append(
                f"package {name} {pk_before.get(name, '(none)')} -> {pk_now.get(name, '(none)')}"
            )
    a_now, a_before = now.get("artifacts", {}), before.get("artifacts", {})
    for name in sorted(set(a_now) | set(a_before)):
        if a_now.get(name) != a_before.get(name):
            old, new = (a_before.get(name) or "(none)")[:12], (a_now.get(name) or "(none)")[:12]
            changes.append(f"input {name!r} data changed (sha256 {old} -> {new})")
    v_now, v_before = now.get("values", {}), before.get("values", {})
    for name in sorted(set(v_now) | set(v_before)):
        if v_now.get(name, "<unset>") != v_before.get(name, "<unset>"):
            changes.append(
                f"input {name!r} changed: {_short(v_before.get(name))} -> {_short(v_now.get(name))}"
            )
    e_now, e_before = now.get("env", {}), before.get("env", {})
    for name in sorted(set(e_now) | set(e_before)):
        if e_now.get(name) != e_before.get(name):
            changes.append(f"env {name} changed: {e_before.get(name)!r} -> {e_now.get(name)!r}")
    if now.get("outputs") != before.get("outputs"):
        changes.append("declared outputs changed")
    if now.get("cache_version") != before.get("cache_version"):
        changes.append(
            f"cache_version changed: {before.get('cache_version')!r} -> {now.get('cache_version')!r}"
        )
    return changes


def find_hit(
    session: Session,
    store: ArtifactStore,
    tenant: str,
    key: str,
    ttl: float | None,
    outputs: list[str],
) -> Task | None:
    """The newest earlier task with this key whose outputs are all still stored."""
    query = (
        select(Task)
        .where(
            Task.tenant == tenant,
            Task.cache_key == key,
            Task.state.in_([TaskState.SUCCEEDED, TaskState.CACHED]),
        )
        .order_by(Task.id.desc())
        .limit(5)
    )
    if ttl is not None:
        query = query.where(Task.finished_at >= q.now() - timedelta(seconds=ttl))
    for candidate in session.scalars(query):
        arts = {
            a.output_name: a
            for a in session.scalars(select(Artifact).where(Artifact.task_id == candidate.id))
        }
        if all(o in arts and store.has_blob(arts[o].sha256) for o in outputs):
            return candidate
    return None


def nearest_earlier(session: Session, tenant: str, task: Task) -> Task | None:
    """The most recent earlier task of the same step (same node path first) that has a key."""
    base = select(Task).where(
        Task.tenant == tenant,
        Task.step_name == task.step_name,
        Task.cache_key.is_not(None),
        Task.id < task.id,
        Task.run_id != task.run_id,
    )
    same_node = session.scalar(
        base.where(Task.node_path == task.node_path).order_by(Task.id.desc()).limit(1)
    )
    return same_node or session.scalar(base.order_by(Task.id.desc()).limit(1))
