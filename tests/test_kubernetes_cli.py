"""``argosy admin tenant-namespace``: rendered documents validate against the official schemas
(kubernetes-validate) and carry the tenant's quota; ``--apply`` applies them server-side to the
hand-written FAKE API server (tests/kubernetes_fake.py) through a kubeconfig, twice (create,
then update)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from argosy.cli.main import app
from argosy.ids import new_id
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Tenant
from tests import kubernetes_fake as fk

QUOTA = {"running_tasks": 10, "cpu": 32, "memory": 64 * 2**30, "gpu": 2}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'argosy.db'}"
    metadata = MetadataStore.open(url)
    with metadata.session() as s:
        s.add(
            Tenant(
                id=new_id(),
                tenant="team-a",
                name="team-a",
                quotas=QUOTA,
                created_at=datetime.now(UTC),
                created_by="admin",
            )
        )
    metadata.engine.dispose()
    values = {
        "ARGOSY_HOME": str(tmp_path / "home"),
        "ARGOSY_DATABASE_URL": url,
        "ARGOSY_KUBERNETES_ROLE_ARN": "arn:aws:iam::123456789012:role/argosy-{tenant}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield values


def test_renders_valid_documents_from_the_tenants_quota(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["admin", "tenant-namespace", "team-a"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    for doc in docs:
        kubernetes_validate.validate(doc, fk.KUBERNETES_VERSION, strict=True)
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["Namespace"]["metadata"]["name"] == "argosy-team-a"
    assert by_kind["ResourceQuota"]["spec"]["hard"] == {
        "pods": "10",
        "requests.cpu": "32000m",
        "requests.memory": "65536Mi",
        "requests.nvidia.com/gpu": "2",
    }
    sa = by_kind["ServiceAccount"]["metadata"]
    assert sa["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/argosy-team-a")
    as_json = CliRunner().invoke(app, ["admin", "tenant-namespace", "team-a", "-o", "json"])
    assert [d["kind"] for d in json.loads(as_json.output)["items"]] == [d["kind"] for d in docs]


def test_unknown_tenant_names_the_known_ones(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["admin", "tenant-namespace", "team-b"])
    assert result.exit_code != 0
    assert "team-a" in str(result.exception)


def test_apply_to_the_fake_api_server(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fk.FakeKubernetes() as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        for _ in range(2):  # create, then update in place
            result = CliRunner().invoke(app, ["admin", "tenant-namespace", "team-a", "--apply"])
            assert result.exit_code == 0, result.output
        assert "applied ResourceQuota/argosy-tenant-quota in argosy-team-a" in result.output
        assert fake.get("namespaces", None, "argosy-team-a") is not None
        quota = fake.get("resourcequotas", "argosy-team-a", "argosy-tenant-quota")
        assert quota is not None and quota["spec"]["hard"]["pods"] == "10"
        patches = [p for m, p in fake.requests if m == "PATCH"]
        assert patches and all("fieldManager=argosy" in p and "force=true" in p for p in patches)
