"""The Kubeflow Pipelines v2beta1 API that ``kfp.Client`` uses, per tenant.

``kfp.Client(host=".../api/v1/tenants/<tenant>/kfp", existing_token=<Argosy API token>)``
calls ``{host}/apis/v2beta1/...``: the tenant is the KFP namespace, and the same bearer
tokens, role bindings and audit apply as to the rest of the API. Each route authorizes, makes
one call to :mod:`argosy.interop.kfp.service` (which maps KFP shapes onto Argosy's pipelines,
runs and schedules) and returns KFP JSON.
"""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from typing import Annotated, Any

from fastapi import Body, Query, Request
from starlette.concurrency import run_in_threadpool

from argosy.auth.policy import Action
from argosy.errors import UsageError
from argosy.interop.kfp import service as kfp
from argosy.server import limits
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import service_context, tenant_router

router = tenant_router("kubeflow")
V2 = "/kfp/apis/v2beta1"
UPLOAD_BYTES = 16 * 1024 * 1024  # a compiled pipeline file

Str = Annotated[str | None, Query(max_length=1024)]
PageSize = Annotated[int | None, Query(ge=1, le=1000)]
Filter = Annotated[str | None, Query(max_length=8192)]
JsonBody = Annotated[dict[str, Any], Body()]


async def _uploaded(request: Request) -> tuple[str, str]:
    """The ``uploadfile`` part of a multipart upload: (its text, its file name)."""
    content_type = request.headers.get("content-type", "")
    data = await request.body()
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + data
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                break
            try:
                return payload.decode("utf-8"), part.get_filename() or "pipeline.yaml"
            except UnicodeDecodeError:
                raise UsageError("the uploaded pipeline is not UTF-8 text") from None
    raise UsageError("send the compiled pipeline (IR YAML) as the multipart field 'uploadfile'")


@router.get(f"{V2}/healthz", summary="KFP: health", responses=problem_responses())
def healthz(
    tenant: TenantDep, principal: Annotated[Principal, Allowed(Action.PUBLIC)]
) -> dict[str, Any]:
    """Public, as KFP's is: ``kfp.Client()`` asks it before it knows whom it acts for."""
    return kfp.healthz()


@router.post(f"{V2}/pipelines/upload", summary="KFP: upload a pipeline",
             responses=problem_responses(409, 422))  # fmt: skip
@limits.accepts("form", max_bytes=UPLOAD_BYTES, media_types=["multipart/form-data"])
async def upload_pipeline(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_PUSH)],
    context: ContextDep,
    name: Str = None,
    display_name: Str = None,
    namespace: Str = None,
) -> dict[str, Any]:
    """Import a KFP IR file (``uploadfile``) as a pipeline named ``name``."""
    text, filename = await _uploaded(request)
    ctx = service_context(context, tenant, principal)
    return await run_in_threadpool(
        kfp.upload_pipeline, ctx, text, filename, name or display_name, namespace
    )


@router.post(f"{V2}/pipelines/upload_version", summary="KFP: upload a pipeline version",
             responses=problem_responses(404, 409, 422))  # fmt: skip
@limits.accepts("form", max_bytes=UPLOAD_BYTES, media_types=["multipart/form-data"])
async def upload_version(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_PUSH)],
    context: ContextDep,
    pipelineid: Annotated[str, Query(min_length=1, max_length=255)],
    name: Str = None,
    display_name: Str = None,
) -> dict[str, Any]:
    text, filename = await _uploaded(request)
    ctx = service_context(context, tenant, principal)
    return await run_in_threadpool(
        kfp.upload_version, ctx, text, filename, pipelineid, name or display_name
    )


@router.get(f"{V2}/pipelines", summary="KFP: list pipelines", responses=problem_responses())
def list_pipelines(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
    page_token: Str = None,
    page_size: PageSize = None,
    filter: Filter = None,
    namespace: Str = None,
    sort_by: Str = None,
) -> dict[str, Any]:
    return kfp.list_pipelines(
        service_context(context, tenant, principal), page_token, page_size, filter, namespace
    )


@router.get(f"{V2}/pipelines/{{pipeline_id}}", summary="KFP: get a pipeline",
            responses=problem_responses(404))  # fmt: skip
def get_pipeline(
    pipeline_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.get_pipeline(service_context(context, tenant, principal), pipeline_id)


@router.get(f"{V2}/pipelines/{{pipeline_id}}/versions", summary="KFP: list pipeline versions",
            responses=problem_responses(404))  # fmt: skip
def list_versions(
    pipeline_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
    page_token: Str = None,
    page_size: PageSize = None,
    filter: Filter = None,
    sort_by: Str = None,
) -> dict[str, Any]:
    return kfp.list_versions(
        service_context(context, tenant, principal), pipeline_id, page_token, page_size, filter
    )


@router.get(f"{V2}/pipelines/{{pipeline_id}}/versions/{{pipeline_version_id}}",
            summary="KFP: get a pipeline version", responses=problem_responses(404))  # fmt: skip
def get_version(
    pipeline_id: str,
    pipeline_version_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.get_version(
        service_context(context, tenant, principal), pipeline_id, pipeline_version_id
    )


@router.post(f"{V2}/experiments", summary="KFP: create an experiment",
             responses=problem_responses(422))  # fmt: skip
def create_experiment(
    body: JsonBody,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_CREATE)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.create_experiment(service_context(context, tenant, principal), body)


@router.get(f"{V2}/experiments", summary="KFP: list experiments", responses=problem_responses())
def list_experiments(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
    filter: Filter = None,
    namespace: Str = None,
    page_token: Str = None,
    page_size: PageSize = None,
    sort_by: Str = None,
) -> dict[str, Any]:
    return kfp.list_experiments(service_context(context, tenant, principal), filter, namespace)


@router.get(f"{V2}/experiments/{{experiment_id}}", summary="KFP: get an experiment",
            responses=problem_responses())  # fmt: skip
def get_experiment(
    experiment_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.get_experiment(service_context(context, tenant, principal), experiment_id)


@router.post(f"{V2}/runs", summary="KFP: create a run", responses=problem_responses(404, 422))
def create_run(
    body: JsonBody,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_CREATE)],
    context: ContextDep,
    experiment_id: Str = None,
) -> dict[str, Any]:
    """Run a pushed version (``pipeline_version_reference``) or inline IR (``pipeline_spec``,
    pushed as a version first; so an editor may create runs of new pipelines)."""
    return kfp.create_run(service_context(context, tenant, principal), body)


@router.get(f"{V2}/runs", summary="KFP: list runs", responses=problem_responses())
def list_runs(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
    page_token: Str = None,
    page_size: PageSize = None,
    namespace: Str = None,
    experiment_id: Str = None,
    filter: Filter = None,
    sort_by: Str = None,
) -> dict[str, Any]:
    return kfp.list_runs(
        service_context(context, tenant, principal), page_token, page_size, namespace
    )


@router.get(f"{V2}/runs/{{run_id}}", summary="KFP: get a run", responses=problem_responses(404))
def get_run(
    run_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
    experiment_id: Str = None,
) -> dict[str, Any]:
    return kfp.get_run(service_context(context, tenant, principal), run_id)


@router.post(f"{V2}/runs/{{run_id}}:terminate", summary="KFP: terminate a run",
             responses=problem_responses(404))  # fmt: skip
def terminate_run(
    run_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_CANCEL)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.terminate_run(service_context(context, tenant, principal), run_id)


@router.post(f"{V2}/recurringruns", summary="KFP: create a recurring run",
             responses=problem_responses(404, 409, 422))  # fmt: skip
def create_recurring_run(
    body: JsonBody,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.create_recurring_run(
        service_context(context, tenant, principal), body, context.clock.now()
    )


@router.get(f"{V2}/recurringruns", summary="KFP: list recurring runs",
            responses=problem_responses())  # fmt: skip
def list_recurring_runs(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
    page_token: Str = None,
    page_size: PageSize = None,
    namespace: Str = None,
    experiment_id: Str = None,
    filter: Filter = None,
    sort_by: Str = None,
) -> dict[str, Any]:
    return kfp.list_recurring_runs(
        service_context(context, tenant, principal), page_token, page_size, namespace
    )


@router.get(f"{V2}/recurringruns/{{recurring_run_id}}", summary="KFP: get a recurring run",
            responses=problem_responses(404))  # fmt: skip
def get_recurring_run(
    recurring_run_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.get_recurring_run(service_context(context, tenant, principal), recurring_run_id)


@router.post(f"{V2}/recurringruns/{{recurring_run_id}}:enable",
             summary="KFP: enable a recurring run", responses=problem_responses(404))  # fmt: skip
def enable_recurring_run(
    recurring_run_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.set_recurring_run_enabled(
        service_context(context, tenant, principal), recurring_run_id, True, context.clock.now()
    )


@router.post(f"{V2}/recurringruns/{{recurring_run_id}}:disable",
             summary="KFP: disable a recurring run", responses=problem_responses(404))  # fmt: skip
def disable_recurring_run(
    recurring_run_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.set_recurring_run_enabled(
        service_context(context, tenant, principal), recurring_run_id, False, context.clock.now()
    )


@router.delete(f"{V2}/recurringruns/{{recurring_run_id}}",
               summary="KFP: delete a recurring run", responses=problem_responses(404))  # fmt: skip
def delete_recurring_run(
    recurring_run_id: str,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> dict[str, Any]:
    return kfp.delete_recurring_run(service_context(context, tenant, principal), recurring_run_id)
