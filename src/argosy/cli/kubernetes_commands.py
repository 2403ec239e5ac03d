"""``argosy admin tenant-namespace TENANT [--apply]``: a tenant's Kubernetes namespace.

Renders (or applies, server-side) the tenant's Namespace, task ServiceAccount (with its IRSA
role), the RoleBinding that lets the server manage Jobs/Pods/Secrets there, a ResourceQuota
and LimitRange from the tenant's Argosy quota, and the NetworkPolicy that lets task pods
reach only the server's task store, DNS and the object store. Registered on ``argosy admin``
by :func:`register`; the Kubernetes client is imported only with ``--apply``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def render(tenant: str, quota: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tenant's namespace documents under this deployment's settings."""
    from argosy.config import load_settings
    from argosy.executors.kubernetes import manifests

    s = load_settings()
    options = manifests.NamespaceOptions(
        namespace=manifests.namespace_for(s.kubernetes_namespace, tenant),
        service_account=s.kubernetes_service_account.format(tenant=tenant),
        role_arn=s.kubernetes_role_arn,
        server_namespace=s.kubernetes_server_namespace,
    )
    return manifests.tenant_namespace(tenant, quota, options)


def tenant_quota(tenant: str) -> dict[str, Any] | None:
    """The tenant's Argosy quota, from the metadata database (ARGOSY_DATABASE_URL)."""
    from sqlalchemy import select

    from argosy.config import load_settings
    from argosy.errors import NotFoundError
    from argosy.stores.metadata.db import MetadataStore
    from argosy.stores.metadata.tables import Tenant

    metadata = MetadataStore.open(load_settings().metadata_url)
    try:
        with metadata.session() as s:
            row = s.execute(select(Tenant.quotas).where(Tenant.name == tenant)).first()
            if row is None:
                known = s.scalars(select(Tenant.name).order_by(Tenant.name)).all()
                raise NotFoundError(
                    f"no tenant named {tenant!r} in {metadata.where}; known: "
                    f"{', '.join(known) or 'none'} (create it with 'argosy tenants create')"
                )
            return dict(row[0]) if row[0] else None
    finally:
        metadata.engine.dispose()


def tenant_namespace(
    tenant: Annotated[str, typer.Argument(metavar="TENANT")],
    apply: Annotated[
        bool, typer.Option("--apply", help="apply to the cluster (KUBECONFIG or in-cluster)")
    ] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json")] = "yaml",
) -> None:
    """Render a tenant's namespace, service account, role binding, quota and network policy
    (from its Argosy quota); with --apply, apply them server-side."""
    docs = render(tenant, tenant_quota(tenant))
    if apply:
        from argosy.executors.kubernetes.client import KubernetesClient

        client = KubernetesClient.connect()
        try:
            for doc in docs:
                client.apply(doc)
                meta = doc["metadata"]
                where = f" in {meta['namespace']}" if meta.get("namespace") else ""
                typer.echo(f"applied {doc['kind']}/{meta['name']}{where}")
        finally:
            client.close()
        return
    if output == "json":
        typer.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2))
        return
    import yaml

    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


def compile_argo(settings: Any, target: str, dest: Any, image: str | None) -> None:
    """``argosy compile --target argo``: the pipeline as an Argo ``WorkflowTemplate``."""
    import sys
    from pathlib import Path

    import yaml

    from argosy.cli.commands import compile_target
    from argosy.errors import UsageError
    from argosy.executors.kubernetes.manifests import parse_pools
    from argosy.interop.argo import workflow_template

    image = image or settings.kubernetes_runtime_image
    if not image:
        raise UsageError(
            "--target argo needs the runtime image of Python steps, pinned by digest: "
            "--image REPO@sha256:... or ARGOSY_KUBERNETES_RUNTIME_IMAGE"
        )
    compiled = compile_target(settings, target)
    pools = parse_pools(settings.kubernetes_pools) if settings.kubernetes_pools else None
    doc = workflow_template(compiled.spec, image=image, pools=pools)
    text = yaml.safe_dump(doc, sort_keys=False)
    if dest is not None and Path(dest).suffix == ".json":
        text = json.dumps(doc, indent=2) + "\n"
    if dest is None:
        sys.stdout.write(text)
    else:
        Path(dest).write_text(text)
        typer.echo(f"wrote WorkflowTemplate {doc['metadata']['name']} to {dest}", err=True)


def register(admin_app: typer.Typer) -> None:
    admin_app.command("tenant-namespace")(tenant_namespace)
