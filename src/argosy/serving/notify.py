"""A helper for the last step of a training pipeline: promote a model version and tell the
serving target.

The built-in service (``argosy models serve MODEL@ALIAS``) follows the alias by itself; an
external prediction platform is told through a webhook: a signed POST
(:mod:`argosy.webhooks`) of the model's URI and metadata::

    @step(secrets=["DEPLOY_HOOK_SECRET", "ARGOSY_TOKEN"])
    def deploy(model: Annotated[object, serializer("joblib")], metrics: Metrics) -> None:
        from argosy.serving.notify import promote_and_notify
        ...
        promote_and_notify("breast-cancer", 3, "production", reason="ROC AUC 0.99",
                           webhook="https://deploy.example.com/hooks/argosy",
                           secret=os.environ["DEPLOY_HOOK_SECRET"])

It acts through the backend of the step's settings (``ARGOSY_SERVER`` and ``ARGOSY_TOKEN``
on a server, else the local state folder), as any Python API call does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from argosy import api

if TYPE_CHECKING:
    from argosy.client.backend import Backend


def payload(
    version: api.ModelVersion, alias: str, event: api.AliasEvent, server: str | None
) -> dict[str, Any]:
    """What an external platform is sent: enough to fetch and check the model."""
    uri = f"argosy://{version.model}/{version.version}"
    body: dict[str, Any] = {
        "event": "model.promoted", "model": version.model, "alias": alias,
        "version": version.version, "previous_version": event.previous_version,
        "uri": uri, "artifact": version.artifact, "artifact_id": version.artifact_id,
        "sha256": version.sha256, "format": version.format, "type": version.type,
        "signature": version.signature,
        "input_schema": version.input_schema.model_dump() if version.input_schema else None,
        "output_schema": version.output_schema.model_dump() if version.output_schema else None,
        "metrics": version.metrics, "run_id": version.run_id, "pipeline": version.pipeline,
        "promoted_by": event.by, "promoted_at": event.at.isoformat(), "reason": event.reason,
    }  # fmt: skip
    if server:
        body["download"] = (
            f"{server.rstrip('/')}/api/v1/tenants/{{tenant}}/artifacts/{version.artifact_id}/content"
        )
    return body


def promote_and_notify(
    model: str,
    version: int,
    alias: str,
    *,
    reason: str | None = None,
    webhook: str | None = None,
    secret: str | None = None,
    backend: Backend | None = None,
    timeout: float = 30.0,
) -> api.AliasEvent | api.PromotionRequest:
    """Promote ``model`` ``version`` to ``alias``; with ``webhook``, POST the signed payload
    there (``secret`` required) and raise if it is not answered with a 2xx. Where the tenant's
    promotion policy reserves the alias, the pending request is returned and nothing is sent
    (the alias has not moved)."""
    import httpx

    from argosy.client.runs import backend_of
    from argosy.errors import ArgosyError, UsageError
    from argosy.ids import new_id
    from argosy.webhooks import sign

    if webhook and not secret:
        raise UsageError("a webhook is signed: give the secret it shares with the receiver")
    found = backend_of(backend)
    event = found.promote_model(model, alias, version, reason)
    if isinstance(event, api.PromotionRequest):
        return event
    if webhook:
        assert secret is not None
        doc = payload(found.get_model_version(model, str(version)), alias, event, found.server_url)
        if "download" in doc:
            doc["download"] = doc["download"].replace("{tenant}", found.tenant)
        body = json.dumps(doc, sort_keys=True).encode()
        response = httpx.post(
            webhook, content=body, headers=sign(secret, body, new_id()), timeout=timeout
        )
        if not response.is_success:
            raise ArgosyError(
                f"{model}@{alias} is version {version}, but the webhook {webhook} answered "
                f"{response.status_code}: {response.text[:200]}"
            )
    return event
