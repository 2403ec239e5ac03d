"""Authentication and authorization against a real server process and a real OIDC issuer
process (``tests.oidc_issuer``): the route x principal matrix (a hand-written table of who may
call what, every call made for real), token attacks, group-driven access, API tokens, and the fail-closed start.

One server (SQLite, a folder store) authenticates tokens of the test issuer; platform admins
are the ``platform-admins`` group. Tenants and bindings are made through the API by an admin.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from argosy.api import API_PREFIX, UploadCreate
from argosy.api.documents import ScheduleCreate
from argosy.api.registry import ModelVersionCreate, PromotionPolicyUpdate
from argosy.api.triggers import TriggerCreate
from argosy.auth.policy import Role
from argosy.client.client import Client
from argosy.config import Settings
from argosy.ids import new_id
from argosy.server.context import ServerContext
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import User
from argosy.webhooks import sign
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerProcess, oidc_env, start_server

ADMIN = {"sub": "root-admin", "groups": ["platform-admins"]}
VIEWER = {"sub": "vic", "groups": ["a-viewers"]}
EDITOR = {"sub": "ed", "groups": []}  # bound as a user
OWNER_A = {"sub": "olga", "groups": ["a-owners"]}
OWNER_B = {"sub": "bob", "groups": ["b-owners"]}
DUMMY_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.fixture(scope="module")
def server(
    oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("auth-server")
    env = oidc_env(oidc_issuer.issuer, ARGOSY_SCIM_TOKEN=SCIM_TOKEN,
                   ARGOSY_OIDC_CLIENT_ID="argosy-web")  # fmt: skip
    started = start_server(home, env)
    yield started
    started.stop(timeout=20)


@pytest.fixture(scope="module")
def db(server: ServerProcess) -> Iterator[MetadataStore]:
    store = MetadataStore.open(f"sqlite:///{server.home / 'argosy.db'}")
    yield store
    store.close()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def call(
    server: ServerProcess, method: str, path: str, token: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {**kw.pop("headers", {}), **bearer(token)}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


@pytest.fixture(scope="module")
def tenants(server: ServerProcess, oidc_issuer: OidcIssuer) -> dict[str, str]:
    """Tenants mx-a, mx-b (matrix) and team-a (other tests), with their bindings."""
    admin = oidc_issuer.token(**ADMIN)  # type: ignore[arg-type]
    for name in ("mx-a", "mx-b", "team-a"):
        ok(call(server, "POST", f"{API_PREFIX}/tenants", admin, json={"name": name}))
    for tenant in ("mx-a", "team-a"):
        for role, kind, subject in (
            ("viewer", "group", "a-viewers"), ("editor", "user", "ed"),
            ("owner", "group", "a-owners"),
        ):  # fmt: skip
            ok(call(server, "POST", f"{API_PREFIX}/tenants/{tenant}/members", admin,
                    json={"role": role, "subject_kind": kind, "subject": subject}))  # fmt: skip
    ok(call(server, "POST", f"{API_PREFIX}/tenants/mx-b/members", admin,
            json={"role": "owner", "subject_kind": "group", "subject": "b-owners"}))  # fmt: skip
    return {"a": "mx-a", "b": "mx-b"}


# -- the authorization matrix ---------------------------------------------------------------
# The expected answers are written out here by hand from the roles in docs/security.md, NOT
# computed from argosy.auth.policy: a change to the policy tables must fail this test until
# the table below is changed with it (and reviewed). Every route the app serves needs a row.
#
# Principals (columns): anonymous; viewer, editor and owner of tenant A (mx-a); the owner of
# tenant B (mx-b, no role in A); a platform admin; the SCIM client (its own bearer token).
# Calls are made on tenant A. "y": allowed, and the call is made for real on a real object
# and must succeed; "-": refused (401 for anonymous, for the SCIM token outside SCIM and the
# task store, and for every non-SCIM caller of SCIM; 403 for the others: the task store answers
# any bearer that is not a task token with 403). A 5xx is always a failure.
# The task-store routes admit only task tokens: tests/test_task_credentials.py shows a task's
# own token allowed; here they are refused to every person and service.
PRINCIPALS = ("anon", "viewer", "editor", "owner_a", "owner_b", "admin", "scim")
T = "/api/v1/tenants/{tenant}"
U = "/t/{tenant}"  # the web UI's pages of a tenant (src/argosy/server/ui)
MATRIX_ROWS = f"""
                                                          anon viewer editor owner_a owner_b admin scim
GET    /healthz                                           y    y      y      y       y       y     y
GET    /readyz                                            y    y      y      y       y       y     y
GET    /auth/login                                        y    y      y      y       y       y     y
GET    /auth/callback                                     y    y      y      y       y       y     y
POST   /auth/logout                                       -    y      y      y       y       y     -
GET    /api/v1/auth/config                                y    y      y      y       y       y     y
GET    /api/v1/me                                         -    y      y      y       y       y     -
GET    /api/v1/tenants                                    -    y      y      y       y       y     -
POST   /api/v1/tenants                                    -    -      -      -       -       y     -
GET    {T}                                                -    y      y      y       -       y     -
POST   {T}/archive                                        -    -      -      -       -       y     -
PATCH  {T}/settings                                       -    -      -      y       -       y     -
PUT    {T}/quotas                                         -    -      -      -       -       y     -
PUT    {T}/blobs/{{sha256}}                               -    -      y      y       -       y     -
HEAD   {T}/blobs/{{sha256}}                               -    y      y      y       -       y     -
POST   {T}/pipelines/{{pipeline}}/versions                -    -      y      y       -       y     -
GET    {T}/pipelines                                      -    y      y      y       -       y     -
GET    {T}/pipelines/{{pipeline}}                         -    y      y      y       -       y     -
GET    {T}/pipelines/{{pipeline}}/versions                -    y      y      y       -       y     -
GET    {T}/pipelines/{{pipeline}}/versions/{{ref}}        -    y      y      y       -       y     -
POST   {T}/runs                                           -    -      y      y       -       y     -
GET    {T}/runs                                           -    y      y      y       -       y     -
GET    {T}/runs/{{run_id}}                                -    y      y      y       -       y     -
GET    {T}/runs/{{run_id}}/tasks                          -    y      y      y       -       y     -
GET    {T}/runs/{{run_id}}/detail                         -    y      y      y       -       y     -
GET    {T}/runs/{{run_id}}/diff/{{other_run_id}}          -    y      y      y       -       y     -
POST   {T}/runs/{{run_id}}/reproduce                      -    -      y      y       -       y     -
GET    {T}/runs/{{run_id}}/artifacts/{{output_path:path}} -    y      y      y       -       y     -
GET    {T}/artifacts/{{artifact_id}}/lineage              -    y      y      y       -       y     -
POST   {T}/uploads                                        -    -      y      y       -       y     -
GET    {T}/uploads/{{upload_id}}                          -    -      y      y       -       y     -
PUT    {T}/uploads/{{upload_id}}                          -    -      y      y       -       y     -
POST   {T}/uploads/{{upload_id}}/complete                 -    -      y      y       -       y     -
POST   {T}/runs/{{run_id}}/cancel                         -    -      y      y       -       y     -
POST   {T}/runs/{{run_id}}/retry                          -    -      y      y       -       y     -
GET    {T}/runs/{{run_id}}/artifacts                      -    y      y      y       -       y     -
GET    {T}/artifacts/{{artifact_id}}                      -    y      y      y       -       y     -
GET    {T}/artifacts/{{artifact_id}}/content              -    y      y      y       -       y     -
GET    {T}/runs/{{run_id}}/logs                           -    y      y      y       -       y     -
GET    {T}/runs/{{run_id}}/logs/stream                    -    y      y      y       -       y     -
GET    {T}/logs/search                                    -    y      y      y       -       y     -
GET    {T}/costs                                          -    y      y      y       -       y     -
GET    {T}/costs/budget                                   -    y      y      y       -       y     -
GET    /api/v1/costs                                      -    -      -      -       -       y     -
GET    /metrics                                           -    -      -      -       -       y     -
DELETE {T}/runs/{{run_id}}                                -    -      -      y       -       y     -
POST   /api/v1/gc                                         -    -      -      -       -       y     -
GET    {T}/retention                                      -    y      y      y       -       y     -
PUT    {T}/retention                                      -    -      -      y       -       y     -
GET    {T}/holds                                          -    y      y      y       -       y     -
POST   {T}/holds                                          -    -      -      y       -       y     -
POST   {T}/holds/{{hold_id}}/release                      -    -      -      y       -       y     -
GET    {T}/retrievals                                     -    y      y      y       -       y     -
POST   {T}/retrievals                                     -    y      y      y       -       y     -
POST   {T}/retrievals/{{retrieval_id}}/decision           -    -      -      y       -       y     -
POST   /api/v1/lifecycle                                  -    -      -      -       -       y     -
POST   {T}/schedules                                      -    -      y      y       -       y     -
GET    {T}/schedules                                      -    y      y      y       -       y     -
GET    {T}/schedules/{{name}}                             -    y      y      y       -       y     -
POST   {T}/schedules/{{name}}/pause                       -    -      y      y       -       y     -
POST   {T}/schedules/{{name}}/resume                      -    -      y      y       -       y     -
DELETE {T}/schedules/{{name}}                             -    -      y      y       -       y     -
GET    {T}/schedules/{{name}}/fires                       -    y      y      y       -       y     -
POST   {T}/models/{{model}}/versions                      -    -      y      y       -       y     -
GET    {T}/models                                         -    y      y      y       -       y     -
GET    {T}/models/{{model}}                               -    y      y      y       -       y     -
GET    {T}/models/{{model}}/versions                      -    y      y      y       -       y     -
GET    {T}/models/{{model}}/versions/{{ref}}              -    y      y      y       -       y     -
PUT    {T}/models/{{model}}/aliases/{{alias}}             -    -      y      y       -       y     -
DELETE {T}/models/{{model}}/aliases/{{alias}}             -    -      y      y       -       y     -
GET    {T}/models/{{model}}/aliases/{{alias}}             -    y      y      y       -       y     -
GET    {T}/models/{{model}}/history                       -    y      y      y       -       y     -
GET    {T}/promotions                                     -    y      y      y       -       y     -
GET    {T}/promotions/{{request_id}}                      -    y      y      y       -       y     -
POST   {T}/promotions/{{request_id}}/decision             -    -      -      y       -       y     -
GET    {T}/promotion-policy                               -    y      y      y       -       y     -
PUT    {T}/promotion-policy                               -    -      -      y       -       y     -
POST   {T}/triggers                                       -    -      y      y       -       y     -
GET    {T}/triggers                                       -    y      y      y       -       y     -
GET    {T}/triggers/{{name}}                              -    y      y      y       -       y     -
DELETE {T}/triggers/{{name}}                              -    -      y      y       -       y     -
POST   {T}/triggers/{{name}}/pause                        -    -      y      y       -       y     -
POST   {T}/triggers/{{name}}/resume                       -    -      y      y       -       y     -
GET    {T}/triggers/{{name}}/fires                        -    y      y      y       -       y     -
POST   {T}/triggers/{{name}}/webhook                      y    y      y      y       y       y     y
GET    {T}/kfp/apis/v2beta1/healthz                        y    y      y      y       y       y     y
POST   {T}/kfp/apis/v2beta1/pipelines/upload               -    -      y      y       -       y     -
POST   {T}/kfp/apis/v2beta1/pipelines/upload_version       -    -      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/pipelines                      -    y      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/pipelines/{{pipeline_id}}      -    y      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/pipelines/{{pipeline_id}}/versions -    y  y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/pipelines/{{pipeline_id}}/versions/{{pipeline_version_id}} - y y y - y -
POST   {T}/kfp/apis/v2beta1/experiments                    -    -      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/experiments                    -    y      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/experiments/{{experiment_id}}  -    y      y      y       -       y     -
POST   {T}/kfp/apis/v2beta1/runs                           -    -      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/runs                           -    y      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/runs/{{run_id}}                -    y      y      y       -       y     -
POST   {T}/kfp/apis/v2beta1/runs/{{run_id}}:terminate      -    -      y      y       -       y     -
POST   {T}/kfp/apis/v2beta1/recurringruns                  -    -      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/recurringruns                  -    y      y      y       -       y     -
GET    {T}/kfp/apis/v2beta1/recurringruns/{{recurring_run_id}} - y     y      y       -       y     -
POST   {T}/kfp/apis/v2beta1/recurringruns/{{recurring_run_id}}:enable - - y  y       -       y     -
POST   {T}/kfp/apis/v2beta1/recurringruns/{{recurring_run_id}}:disable - - y y       -       y     -
DELETE {T}/kfp/apis/v2beta1/recurringruns/{{recurring_run_id}} - -     y      y       -       y     -
PUT    {T}/secrets/{{name}}                               -    -      -      y       -       y     -
GET    {T}/secrets                                        -    -      -      y       -       y     -
DELETE {T}/secrets/{{name}}                               -    -      -      y       -       y     -
GET    {T}/members                                        -    -      -      y       -       y     -
POST   {T}/members                                        -    -      -      y       -       y     -
DELETE {T}/members/{{binding_id}}                         -    -      -      y       -       y     -
POST   {T}/tokens                                         -    -      -      y       -       y     -
GET    {T}/tokens                                         -    -      -      y       -       y     -
DELETE {T}/tokens/{{token_id}}                            -    -      -      y       -       y     -
GET    {T}/audit                                          -    -      -      y       -       y     -
GET    /api/v1/audit                                      -    -      -      -       -       y     -
GET    /api/v1/audit/export                               -    -      -      -       -       y     -
HEAD   /api/v1/task-store/{{key:path}}                    -    -      -      -       -       -     -
GET    /api/v1/task-store/{{key:path}}                    -    -      -      -       -       -     -
PUT    /api/v1/task-store/{{key:path}}                    -    -      -      -       -       -     -
GET    /api/v1/task-store                                 -    -      -      -       -       -     -
POST   /api/v1/task-store-rename                          -    -      -      -       -       -     -
POST   /api/v1/task-store-uploads                         -    -      -      -       -       -     -
POST   /api/v1/task-store-uploads/done                    -    -      -      -       -       -     -
GET    /scim/v2/Users                                     -    -      -      -       -       -     y
POST   /scim/v2/Users                                     -    -      -      -       -       -     y
GET    /scim/v2/Users/{{user_id}}                         -    -      -      -       -       -     y
PUT    /scim/v2/Users/{{user_id}}                         -    -      -      -       -       -     y
PATCH  /scim/v2/Users/{{user_id}}                         -    -      -      -       -       -     y
DELETE /scim/v2/Users/{{user_id}}                         -    -      -      -       -       -     y
GET    /scim/v2/Groups                                    -    -      -      -       -       -     y
POST   /scim/v2/Groups                                    -    -      -      -       -       -     y
GET    /scim/v2/Groups/{{group_id}}                       -    -      -      -       -       -     y
PUT    /scim/v2/Groups/{{group_id}}                       -    -      -      -       -       -     y
PATCH  /scim/v2/Groups/{{group_id}}                       -    -      -      -       -       -     y
DELETE /scim/v2/Groups/{{group_id}}                       -    -      -      -       -       -     y
GET    /scim/v2/ServiceProviderConfig                     -    -      -      -       -       -     y
GET    /scim/v2/Schemas                                   -    -      -      -       -       -     y
GET    /scim/v2/ResourceTypes                             -    -      -      -       -       -     y
GET    /                                                  -    y      y      y       y       y     -
GET    /static/{{asset}}                                  y    y      y      y       y       y     y
GET    {U}/runs                                           -    y      y      y       -       y     -
GET    {U}/runs/{{run_id}}                                -    y      y      y       -       y     -
GET    {U}/runs/{{run_id}}/steps/{{node:path}}            -    y      y      y       -       y     -
GET    {U}/runs/{{run_id}}/log.txt                        -    y      y      y       -       y     -
POST   {U}/runs/{{run_id}}/cancel                         -    -      y      y       -       y     -
POST   {U}/runs/{{run_id}}/retry                          -    -      y      y       -       y     -
GET    {U}/artifacts/{{artifact_id}}                      -    y      y      y       -       y     -
GET    {U}/artifacts/{{artifact_id}}/image                -    y      y      y       -       y     -
GET    {U}/artifacts/{{artifact_id}}/lineage              -    y      y      y       -       y     -
GET    {U}/compare                                        -    y      y      y       -       y     -
GET    {U}/pipelines                                      -    y      y      y       -       y     -
GET    {U}/pipelines/{{pipeline}}                         -    y      y      y       -       y     -
POST   {U}/pipelines/{{pipeline}}/launch                  -    -      y      y       -       y     -
GET    {U}/schedules                                      -    y      y      y       -       y     -
GET    {U}/members                                        -    -      -      y       -       y     -
GET    {U}/tokens                                         -    -      -      y       -       y     -
GET    {U}/secrets                                        -    -      -      y       -       y     -
GET    {U}/settings                                       -    y      y      y       -       y     -
GET    {U}/audit                                          -    -      -      y       -       y     -
GET    /admin/tenants                                     -    -      -      -       -       y     -
GET    /admin/audit                                       -    -      -      -       -       y     -
"""


def _matrix() -> dict[tuple[str, str], dict[str, bool]]:
    lines = [line.split() for line in MATRIX_ROWS.strip().splitlines()]
    assert tuple(lines[0]) == PRINCIPALS
    table: dict[tuple[str, str], dict[str, bool]] = {}
    for method, path, *cells in lines[1:]:
        assert len(cells) == len(PRINCIPALS) and set(cells) <= {"y", "-"}, (method, path)
        assert (method, path) not in table, f"two rows for {method} {path}"
        table[method, path] = {
            who: cell == "y" for who, cell in zip(PRINCIPALS, cells, strict=True)
        }
    return table


def _served_routes() -> list[tuple[str, str]]:
    from argosy.server.app import create_app
    from argosy.server.identity import route_actions

    settings = Settings(insecure_dev=True)
    app = create_app(cast(ServerContext, SimpleNamespace(coordinator=None, settings=settings)))
    return [(r.method, r.path) for r in route_actions(app)]


def test_every_api_route_declares_an_action() -> None:
    from argosy.server.app import create_app
    from argosy.server.identity import route_actions

    settings = Settings(insecure_dev=True)
    app = create_app(cast(ServerContext, SimpleNamespace(coordinator=None, settings=settings)))
    routes = [r for r in route_actions(app) if r.path.startswith(API_PREFIX)]
    assert len(routes) >= 25
    missing = [f"{r.method} {r.path}" for r in routes if r.action is None]
    assert not missing, f"API routes without a declared action (identity.authorized): {missing}"


def test_the_matrix_has_one_row_per_route_the_server_serves() -> None:
    """A new route fails here until its row (who may call it) is written into MATRIX_ROWS."""
    served = set(_served_routes())
    table = set(_matrix())
    assert not served - table, f"routes with no row in MATRIX_ROWS: {sorted(served - table)}"
    assert not table - served, (
        f"rows for routes the server no longer serves: {sorted(table - served)}"
    )


MATRIX_PIPELINES = textwrap.dedent(
    """
    import time
    from argosy import pipeline, step

    @step
    def make() -> int:
        print("made it")
        return 6

    @pipeline
    def quick():
        make()

    @step
    def wait_long() -> int:
        time.sleep(600)
        return 0

    @pipeline
    def blocking():
        wait_long()

    @step
    def boom() -> int:
        raise RuntimeError("boom")

    @pipeline
    def failing():
        boom()
    """
)


@dataclass
class Call:
    """One request of the matrix: the filled-in path, keyword arguments for httpx, and the
    status an allowed call must answer."""

    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    success: tuple[int, ...] = (200,)


class World:
    """Real objects in tenant A for the matrix calls. ``shared``: one object that refused calls
    use (a refused call must change nothing); ``fresh``: a new one for each allowed call that
    consumes it (a delete, a cancel, an archive)."""

    def __init__(self, server: ServerProcess, admin: str, tenant: str, folder: Path) -> None:
        self.server, self.admin, self.tenant = server, admin, tenant
        self.counter = itertools.count()
        (folder / "matrix_pipes.py").write_text(MATRIX_PIPELINES)
        self.client = Client(server.url, token=admin, tenant=tenant)
        for name in ("quick", "blocking", "failing"):
            self.client.push_pipeline(
                compile_pipeline(load_pipeline(f"{folder / 'matrix_pipes.py'}:{name}"))
            )
        self.version = self.client.list_versions("quick")[0].id
        self.blob = hashlib.sha256(b"matrix blob").hexdigest()
        self.client.upload_blob(b"matrix blob", self.blob)
        self.done_run = self.client.wait(self.client.create_run("quick").id, poll=0.2, timeout=120)
        assert self.done_run.status == "succeeded", self.done_run.error
        self.failed_run = self.client.wait(
            self.client.create_run("failing").id, poll=0.2, timeout=120
        )
        assert self.failed_run.status == "failed"
        self.artifact = self.client.artifacts(self.done_run.id)[0].id
        self.shared_blocking = self.client.create_run("blocking").id
        self.model = "matrix-model"
        self.client.register_model(
            self.model, ModelVersionCreate(artifact=f"{self.done_run.id}/make/output")
        )
        self.client.promote_model(self.model, "staging", 1)
        self.client.set_promotion_policy(PromotionPolicyUpdate(approval=["production"]))
        self.promotion = self.client.promote_model(self.model, "production", 1).id  # pending
        self.client.set_secret("MATRIX_HOOK", "matrix-hook-secret")
        self.hook = self.trigger()
        self.shared_upload = self.upload(b"")
        self.kfp_pipeline = self.kfp_upload()  # a pipeline imported through the KFP API
        self.shared = {
            "schedule": self.schedule(),
            "secret": self.secret(),
            "binding": self.binding(),
            "token": self.api_token(),
            "scim_user": self.scim_user(),
            "scim_group": self.scim_group(),
        }

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def schedule(self) -> str:
        name = self.name("sched-")
        self.client.create_schedule(
            ScheduleCreate(name=name, pipeline="quick", cron="0 0 1 1 *", paused=True)
        )
        return name

    def trigger(self) -> str:
        name = self.name("hook-")
        self.client.create_trigger(
            TriggerCreate(name=name, kind="webhook", source={"secret": "MATRIX_HOOK"},
                          pipeline="quick")
        )  # fmt: skip
        return name

    def secret(self) -> str:
        name = self.name("SECRET_")
        self.client.set_secret(name, "not-a-real-secret")
        return name

    def binding(self) -> str:
        return self.client.add_member("viewer", "user", self.name("someone-")).id

    def api_token(self) -> str:
        return self.client.create_token(self.name("tok-"), "viewer", 1).id

    def upload(self, data: bytes) -> str:
        """An upload of ``data``, started (nothing sent yet)."""
        body = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "format": "file"}
        return self.client.start_upload(UploadCreate.model_validate(body)).id

    def kfp_upload(self) -> str:
        answer = httpx.post(
            f"{self.server.url}{T.format(tenant=self.tenant)}/kfp/apis/v2beta1/pipelines/upload",
            params={"name": "kfp-matrix"}, files={"uploadfile": ("p.yaml", KFP_IR)},
            headers={"Authorization": f"Bearer {self.admin}"}, timeout=30,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        return str(answer.json()["pipeline_id"])

    def blocking_run(self) -> str:
        return self.client.create_run("blocking").id

    def scim(self, method: str, path: str, body: Any) -> Any:
        response = httpx.request(
            method, f"{self.server.url}/scim/v2{path}", json=body, timeout=30,
            headers={"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return response.json()

    def scim_user(self) -> str:
        return str(self.scim("POST", "/Users", {"userName": f"{self.name('u')}@example.com"})["id"])

    def scim_group(self) -> str:
        return str(self.scim("POST", "/Groups", {"displayName": self.name("group-")})["id"])

    def archivable_tenant(self) -> str:
        name = self.name("arch-")
        self.client.create_tenant(name)
        return name

    def call(self, method: str, route: str, allowed: bool) -> Call:
        """The request for ``method route``: on a fresh object when the call is allowed and
        consumes it, else on the shared one."""
        fresh = allowed
        shared = self.shared
        tenant = self.tenant
        blob_data = f"matrix blob {next(self.counter)}".encode()
        values = {
            "pipeline": "quick",
            "ref": self.version,
            "run_id": self.done_run.id,
            "artifact_id": self.artifact,
            "sha256": self.blob,
            "name": shared["schedule"],
            "binding_id": shared["binding"],
            "token_id": shared["token"],
            "user_id": shared["scim_user"],
            "group_id": shared["scim_group"],
            "key:path": f"{tenant}/blobs/{'0' * 64}",
            "other_run_id": self.failed_run.id,
            "output_path:path": "make/output",
            "upload_id": self.shared_upload,
            "asset": "ui.css",
            "node:path": "make",
            "pipeline_id": self.kfp_pipeline,
            "pipeline_version_id": self.version,
            "experiment_id": "Default",
            "recurring_run_id": shared["schedule"],
            "model": self.model,
            "alias": "staging",
            "request_id": self.promotion,
        }
        kwargs: dict[str, Any] = {}
        success: tuple[int, ...] = (200,)
        scim_user = {"userName": f"{self.name('r')}@example.com", "active": True}
        patch_op = {"schemas": [PATCH_OP],
                    "Operations": [{"op": "replace", "path": "displayName", "value": "x"}]}  # fmt: skip
        match method, route.removeprefix(T):
            case "GET", "/auth/login":
                success = (302,)
            case "GET", "/auth/callback":
                # public: never a 401/403; without the code and state of a login it is a 400
                # (the whole browser login is tests/test_login.py)
                success = (400,)
            case "POST", "/auth/logout":
                success = (204,)
            case "POST", "/api/v1/tenants":
                kwargs = {"json": {"name": self.name("new-")}}
                success = (201,)
            case "POST", "/archive":
                if fresh:
                    tenant = self.archivable_tenant()
            case "PATCH", "/settings":
                kwargs = {"json": {"settings": {"matrix": True}}}
            case "PUT", "/quotas":
                kwargs = {"json": {"running_tasks": 100}}
            case "PUT", "/blobs/{sha256}":
                values["sha256"] = hashlib.sha256(blob_data).hexdigest()
                kwargs = {"content": blob_data,
                          "headers": {"Content-Type": "application/octet-stream"}}  # fmt: skip
                success = (201,)
            case "POST", "/pipelines/{pipeline}/versions":
                spec = self.client.get_version("quick", self.version).spec
                kwargs = {"json": {"spec": spec, "version": self.name("v")}}
                success = (200, 201)  # the same content again is 200 (created: false)
            case "POST", "/runs":
                kwargs = {"json": {"pipeline": "quick", "parameters": {}}}
                success = (201,)
            case "POST", "/runs/{run_id}/cancel":
                values["run_id"] = self.blocking_run() if fresh else self.shared_blocking
            case "POST", "/runs/{run_id}/reproduce":
                success = (201,)
            case "POST", "/uploads":
                data = f"upload {next(self.counter)}".encode()
                body = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "format": "file"}  # fmt: skip
                kwargs = {"json": body}
                success = (201,)
            case "PUT", "/uploads/{upload_id}":
                data = f"chunk {next(self.counter)}".encode()
                if fresh:
                    values["upload_id"] = self.upload(data)
                kwargs = {"params": {"offset": 0}, "content": data,
                          "headers": {"Content-Type": "application/octet-stream"}}  # fmt: skip
            case "POST", "/uploads/{upload_id}/complete":
                if fresh:
                    values["upload_id"] = self.upload(b"")
            case "POST", "/runs/{run_id}/retry":
                values["run_id"] = self.failed_run.id
                success = (201,)
            case "POST", "/models/{model}/versions":
                kwargs = {"json": {"artifact": f"{self.done_run.id}/make/output"}}
                success = (200, 201)  # the same artifact again is 200 (created: false)
            case "GET", "/models/{model}/versions/{ref}":
                values["ref"] = "1"
            case "PUT", "/models/{model}/aliases/{alias}":
                values["alias"] = self.name("moved-")
                kwargs = {"json": {"version": 1, "reason": "matrix"}}
            case "DELETE", "/models/{model}/aliases/{alias}":
                values["alias"] = "staging"
                if fresh:
                    values["alias"] = self.name("gone-")
                    self.client.promote_model(self.model, values["alias"], 1)
            case "DELETE", "/runs/{run_id}":  # a finished run of its own for each deletion
                if fresh:
                    made = self.client.create_run("quick").id
                    values["run_id"] = self.client.wait(made, poll=0.2, timeout=120).id
            case "PUT", "/retention":
                kwargs = {"json": {"archive_after_days": 30}}
            case "POST", "/holds":
                kwargs = {"json": {"target": self.done_run.id, "reason": "matrix"}}
                success = (201,)
            case "POST", "/holds/{hold_id}/release":  # a hold of its own for each release
                from argosy.client.http import HttpBackend

                held = HttpBackend(self.client).place_hold(self.done_run.id, "matrix")
                values["hold_id"] = held.id if fresh else DUMMY_ID
            case "POST", "/retrievals":
                kwargs = {"json": {"target": self.done_run.id, "reason": "matrix"}}
                success = (409,)  # allowed; nothing is archived here (test_ops_retention.py)
            case "POST", "/promotions/{request_id}/decision":
                values["request_id"] = DUMMY_ID
                kwargs = {"json": {"approve": True}}
                success = (404,)  # allowed; no such request (test_model_approvals.py decides)
            case "PUT", "/promotion-policy":
                kwargs = {"json": {"expire_after_days": 7}}
            case "POST", "/retrievals/{retrieval_id}/decision":
                values["retrieval_id"] = DUMMY_ID
                kwargs = {"json": {"approve": True}}
                success = (404,)  # allowed; no such request (test_ops_retention.py decides)
            case "GET", "/logs/search":
                kwargs = {"params": {"q": "anything"}}
            case "POST", "/triggers":
                kwargs = {"json": {"name": self.name("new-hook-"), "kind": "webhook",
                                   "source": {"secret": "MATRIX_HOOK"}, "pipeline": "quick"}}  # fmt: skip
                success = (201,)
            case ("GET", "/triggers/{name}") | ("GET", "/triggers/{name}/fires"):
                values["name"] = self.hook
            case "DELETE", "/triggers/{name}":
                values["name"] = self.trigger() if fresh else self.hook
                success = (204,)
            case ("POST", "/triggers/{name}/pause") | ("POST", "/triggers/{name}/resume"):
                values["name"] = self.trigger() if fresh else self.hook
            case "POST", "/triggers/{name}/webhook":
                values["name"] = self.hook
                body = b'{"from": "matrix"}'
                kwargs = {"content": body, "headers": sign("matrix-hook-secret", body, "matrix-1")}
                success = (200, 201)  # the first delivery starts a run, the same one again: 200
            case "POST", "/schedules":
                kwargs = {"json": {"name": self.name("new-sched-"), "pipeline": "quick",
                                   "cron": "0 0 1 1 *", "paused": True}}  # fmt: skip
                success = (201,)
            case "DELETE", "/schedules/{name}":
                values["name"] = self.schedule() if fresh else shared["schedule"]
                success = (204,)
            case "PUT", "/secrets/{name}":
                values["name"] = shared["secret"]
                kwargs = {"json": {"value": "another-value"}}
            case "DELETE", "/secrets/{name}":
                values["name"] = self.secret() if fresh else shared["secret"]
                success = (204,)
            case "POST", "/members":
                kwargs = {"json": {"role": "viewer", "subject_kind": "group",
                                   "subject": self.name("grp-")}}  # fmt: skip
                success = (201,)
            case "DELETE", "/members/{binding_id}":
                values["binding_id"] = self.binding() if fresh else shared["binding"]
                success = (204,)
            case "POST", "/tokens":
                kwargs = {"json": {"name": self.name("t-"), "role": "viewer",
                                   "expires_in_days": 1}}  # fmt: skip
                success = (201,)
            case "DELETE", "/tokens/{token_id}":
                values["token_id"] = self.api_token() if fresh else shared["token"]
            case "GET", "/":
                success = (303,)  # to the caller's first tenant's runs
            case "POST", "/t/{tenant}/runs/{run_id}/cancel":
                values["run_id"] = self.blocking_run() if fresh else self.shared_blocking
            case "POST", "/t/{tenant}/runs/{run_id}/retry":
                values["run_id"] = self.failed_run.id
                success = (201,)
            case "GET", "/t/{tenant}/artifacts/{artifact_id}/image":
                success = (404,)  # allowed, but make's int is no image (tests/test_ui_*.py)
            case "GET", "/t/{tenant}/compare":
                kwargs = {"params": {"run": [self.done_run.id, self.failed_run.id]}}
            case "POST", "/t/{tenant}/pipelines/{pipeline}/launch":
                kwargs = {"json": {"values": {}}}
                success = (201,)
            case "GET", "/kfp/apis/v2beta1/pipelines/{pipeline_id}/versions/{pipeline_version_id}":
                values["pipeline_id"] = "quick"
            case "POST", "/kfp/apis/v2beta1/pipelines/upload":
                kwargs = {"params": {"name": self.name("kfp-up-")},
                          "files": {"uploadfile": ("p.yaml", KFP_IR)}}  # fmt: skip
            case "POST", "/kfp/apis/v2beta1/pipelines/upload_version":
                kwargs = {"params": {"pipelineid": self.kfp_pipeline, "name": self.name("v")},
                          "files": {"uploadfile": ("p.yaml", KFP_IR)}}  # fmt: skip
            case "POST", "/kfp/apis/v2beta1/experiments":
                kwargs = {"json": {"display_name": self.name("exp-")}}
            case "POST", "/kfp/apis/v2beta1/runs":
                kwargs = {"json": {"pipeline_version_reference": {"pipeline_id": "quick"}}}
            case "POST", "/kfp/apis/v2beta1/runs/{run_id}:terminate":
                values["run_id"] = self.blocking_run() if fresh else self.shared_blocking
            case "POST", "/kfp/apis/v2beta1/recurringruns":
                kwargs = {"json": {"display_name": self.name("kfp-sched-"), "mode": "DISABLE",
                                   "pipeline_version_reference": {"pipeline_id": "quick"},
                                   "trigger": {"cron_schedule": {"cron": "0 0 0 1 1 *"}}}}  # fmt: skip
            case (
                ("POST", "/kfp/apis/v2beta1/recurringruns/{recurring_run_id}:enable")
                | ("POST", "/kfp/apis/v2beta1/recurringruns/{recurring_run_id}:disable")
                | ("DELETE", "/kfp/apis/v2beta1/recurringruns/{recurring_run_id}")
            ):
                values["recurring_run_id"] = self.schedule() if fresh else shared["schedule"]
            case "PUT", "/api/v1/task-store/{key:path}":
                kwargs = {"content": b"x"}
            case "POST", "/api/v1/task-store-rename":
                kwargs = {"json": {}}
            case "POST", "/api/v1/task-store-uploads" | "/api/v1/task-store-uploads/done":
                kwargs = {"json": {}}
            case "POST", "/scim/v2/Users":
                kwargs = {"json": scim_user}
                success = (201,)
            case "PUT", "/scim/v2/Users/{user_id}":
                kwargs = {"json": scim_user}
            case "PATCH", "/scim/v2/Users/{user_id}":
                kwargs = {"json": {"schemas": [PATCH_OP], "Operations": [
                    {"op": "replace", "path": "active", "value": True}]}}  # fmt: skip
            case "DELETE", "/scim/v2/Users/{user_id}":
                values["user_id"] = self.scim_user() if fresh else shared["scim_user"]
                success = (204,)
            case "POST", "/scim/v2/Groups":
                kwargs = {"json": {"displayName": self.name("grp-")}}
                success = (201,)
            case "PUT", "/scim/v2/Groups/{group_id}":
                kwargs = {"json": {"displayName": self.name("renamed-")}}
            case "PATCH", "/scim/v2/Groups/{group_id}":
                kwargs = {"json": patch_op}
                success = (200, 204)
            case "DELETE", "/scim/v2/Groups/{group_id}":
                values["group_id"] = self.scim_group() if fresh else shared["scim_group"]
                success = (204,)
        path = route.replace("{tenant}", tenant)
        for key, value in values.items():
            path = path.replace("{" + key + "}", value)
        assert "{" not in path, f"no value for a parameter of {path}"
        return Call(path, kwargs, success)


SCIM_TOKEN = "matrix-scim-token-0123456789"
KFP_IR = (Path(__file__).resolve().parent / "kfp" / "pipelines" / "add_numbers.yaml").read_text()
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def test_authorization_matrix(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str], tmp_path: Path
) -> None:
    """Every route x {anonymous, viewer, editor, owner of A, owner of B, admin, SCIM client}
    on tenant A, answered exactly as MATRIX_ROWS says: allowed calls succeed for real,
    refused ones are 401/403 problems."""
    tokens: dict[str, str | None] = {
        "anon": None,
        "viewer": oidc_issuer.token(**VIEWER),  # type: ignore[arg-type]
        "editor": oidc_issuer.token(**EDITOR),  # type: ignore[arg-type]
        "owner_a": oidc_issuer.token(**OWNER_A),  # type: ignore[arg-type]
        "owner_b": oidc_issuer.token(**OWNER_B),  # type: ignore[arg-type]
        "admin": oidc_issuer.token(**ADMIN),  # type: ignore[arg-type]
        "scim": SCIM_TOKEN,
    }
    world = World(server, cast(str, tokens["admin"]), tenants["a"], tmp_path)
    wrong: list[str] = []
    made = 0
    for (method, route), row in _matrix().items():
        for who in PRINCIPALS:
            allowed = row[who]
            call_ = world.call(method, route, allowed)
            response = call(server, method, call_.path, tokens[who], **call_.kwargs)
            status = response.status_code
            where = f"{who} {method} {call_.path}: {status} {response.text[:300]}"
            if status >= 500:
                wrong.append(f"server error: {where}")
            elif allowed and status not in call_.success:
                wrong.append(f"expected {call_.success}: {where}")
            elif not allowed:
                scim_route = route.startswith("/scim/")
                task_route = route.startswith(f"{API_PREFIX}/task-store")
                want = (
                    401
                    if who == "anon" or scim_route or (who == "scim" and not task_route)
                    else 403
                )
                if status != want:
                    wrong.append(f"expected {want}: {where}")
                elif method != "HEAD" and not scim_route:
                    if not response.headers["content-type"].startswith("application/problem+json"):
                        wrong.append(f"not a problem document: {where}")
                    elif not response.json().get("detail"):
                        wrong.append(f"no detail: {where}")
                    if status == 401 and not response.headers.get(
                        "www-authenticate", ""
                    ).startswith("Bearer"):
                        wrong.append(f"401 without a Bearer challenge: {where}")
            made += 1
    assert not wrong, "\n".join(wrong)
    assert made == len(_matrix()) * len(PRINCIPALS)
    # refused calls changed nothing: the shared objects are all still there
    admin = Client(server.url, token=tokens["admin"], tenant=tenants["a"])
    assert world.shared["secret"] in [s.name for s in admin.list_secrets()]
    assert world.shared["binding"] in [m.id for m in admin.list_members()]
    assert world.shared["token"] in [t.id for t in admin.list_tokens() if t.revoked_at is None]
    assert world.shared["schedule"] in [s.name for s in admin.list_schedules()]
    assert admin.get_run(world.shared_blocking).cancel_requested is False
    assert not admin.get_tenant(tenants["a"]).archived
    assert admin.get_model(world.model).aliases["staging"] == 1
    assert world.hook in [t.name for t in admin.list_triggers()]
    admin.cancel_run(world.shared_blocking)


def test_unknown_tenants_look_forbidden_to_all_but_admins(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    owner_b = oidc_issuer.token(**OWNER_B)  # type: ignore[arg-type]
    admin = oidc_issuer.token(**ADMIN)  # type: ignore[arg-type]
    unknown = call(server, "GET", f"{API_PREFIX}/tenants/no-such-team/runs", owner_b)
    other = call(server, "GET", f"{API_PREFIX}/tenants/team-a/runs", owner_b)
    assert unknown.status_code == other.status_code == 403
    assert "no role" in unknown.json()["detail"] and "no role" in other.json()["detail"]
    assert call(server, "GET", f"{API_PREFIX}/tenants/no-such-team/runs", admin).status_code == 404
    mine = ok(call(server, "GET", f"{API_PREFIX}/tenants", owner_b))
    assert [t["name"] for t in mine] == ["mx-b"]
    me = ok(call(server, "GET", f"{API_PREFIX}/me", oidc_issuer.token(**OWNER_A)))  # type: ignore[arg-type]
    assert me["subject"] == "olga" and me["roles"] == {"mx-a": "owner", "team-a": "owner"}


# -- token attacks --------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(oidc_issuer: OidcIssuer) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    return {"iss": oidc_issuer.issuer, "sub": "vic", "aud": "argosy", "iat": now,
            "exp": now + 300, "groups": ["a-viewers"]}  # fmt: skip


def _refused(server: ServerProcess, token: str, why: str) -> None:
    response = call(server, "GET", f"{API_PREFIX}/tenants/team-a/runs", token)
    assert response.status_code == 401, (why, response.text)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"'), challenge
    assert response.json()["detail"], why


def test_token_attacks_are_refused(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    good = oidc_issuer.token(**VIEWER)  # type: ignore[arg-type]
    assert call(server, "GET", f"{API_PREFIX}/tenants/team-a/runs", good).status_code == 200
    claims = _claims(oidc_issuer)
    header = {"typ": "at+jwt", "kid": "key-1"}
    none_token = (
        _b64(json.dumps({**header, "alg": "none"}).encode()) + "."
        + _b64(json.dumps(claims).encode()) + "."
    )  # fmt: skip
    _refused(server, none_token, "alg none")
    signing = (
        _b64(json.dumps({**header, "alg": "HS256"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    import hashlib
    import hmac

    mac = hmac.new(oidc_issuer.public_pem(), signing.encode(), hashlib.sha256).digest()
    _refused(server, signing + "." + _b64(mac), "HS256 with the public key as secret")
    _refused(server, oidc_issuer.token(**VIEWER, iss="https://evil.example"), "wrong iss")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, aud="another-api"), "wrong aud")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, exp_in=-600), "expired")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, nbf_in=600), "nbf in the future")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, exp_in=None), "no exp")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, typ="JWT"), "an ID token (typ JWT)")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, typ=None), "an ID token (no typ)")  # type: ignore[arg-type]
    head, payload, signature = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["groups"] = ["a-owners"]
    _refused(server, f"{head}.{_b64(json.dumps(tampered).encode())}.{signature}", "tampered")
    _refused(server, "not-a-jwt", "garbage")


def test_unknown_kids_refetch_the_key_set_at_most_once(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    ok(call(server, "GET", f"{API_PREFIX}/me", oidc_issuer.token(**VIEWER)))  # type: ignore[arg-type]
    before = oidc_issuer.jwks_requests
    for i in range(50):
        _refused(server, oidc_issuer.token(**VIEWER, kid=f"made-up-{i}"), "unknown kid")  # type: ignore[arg-type]
    assert oidc_issuer.jwks_requests - before <= 1


# -- group-driven access and deactivation ---------------------------------------------------
def test_groups_decide_access_at_the_next_request(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    runs = f"{API_PREFIX}/tenants/team-a/runs"
    # the IdP adds a user to a bound group: access at the next token, nothing changed here
    newcomer = oidc_issuer.token(sub="nina", groups=[])
    assert call(server, "GET", runs, newcomer).status_code == 403
    assert (
        call(server, "GET", runs, oidc_issuer.token(sub="nina", groups=["a-viewers"])).status_code
        == 200
    )
    # an owner removes the group's binding: the same token loses access at its next request
    owner = oidc_issuer.token(**OWNER_A)  # type: ignore[arg-type]
    ok(call(server, "POST", f"{API_PREFIX}/tenants/team-a/members", owner,
            json={"role": "viewer", "subject_kind": "group", "subject": "temp-readers"}))  # fmt: skip
    reader = oidc_issuer.token(sub="tim", groups=["temp-readers"])
    assert call(server, "GET", runs, reader).status_code == 200
    members = ok(call(server, "GET", f"{API_PREFIX}/tenants/team-a/members", owner))
    binding = next(m for m in members if m["subject"] == "temp-readers")
    deleted = call(server, "DELETE", f"{API_PREFIX}/tenants/team-a/members/{binding['id']}", owner)
    assert deleted.status_code == 204
    assert call(server, "GET", runs, reader).status_code == 403


def test_a_deactivated_user_is_refused(
    server: ServerProcess, oidc_issuer: OidcIssuer, db: MetadataStore, tenants: dict[str, str]
) -> None:
    token = oidc_issuer.token(sub="dave", groups=["a-viewers"])
    runs = f"{API_PREFIX}/tenants/team-a/runs"
    assert call(server, "GET", runs, token).status_code == 200
    now = datetime.now(UTC)
    with db.session() as s:
        s.add(User(id=new_id(), external_id="dave", user_name="dave", active=False,
                   created_at=now, updated_at=now, deactivated_at=now))  # fmt: skip
    response = call(server, "GET", runs, token)
    assert response.status_code == 401 and "deactivated" in response.json()["detail"]


# -- API tokens -----------------------------------------------------------------------------
def test_api_tokens(
    server: ServerProcess, oidc_issuer: OidcIssuer, db: MetadataStore, tenants: dict[str, str]
) -> None:
    base = f"{API_PREFIX}/tenants/team-a"
    owner = oidc_issuer.token(**OWNER_A)  # type: ignore[arg-type]
    created = ok(call(server, "POST", f"{base}/tokens", owner,
                      json={"name": "ci", "role": "editor", "expires_in_days": 30}))  # fmt: skip
    token = created["token"]
    assert token.startswith("argosy_") and created["prefix"] == token[:12]
    listed = ok(call(server, "GET", f"{base}/tokens", owner))
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]
    # it acts with its role in its tenant only
    assert call(server, "GET", f"{base}/runs", token).status_code == 200
    assert call(server, "GET", f"{base}/members", token).status_code == 403
    assert call(server, "GET", f"{API_PREFIX}/tenants/mx-a/runs", token).status_code == 403
    me = ok(call(server, "GET", f"{API_PREFIX}/me", token))
    assert me["kind"] == "service" and me["roles"] == {"team-a": "editor"}
    # a token never exceeds its creator's role
    editor = oidc_issuer.token(**EDITOR)  # type: ignore[arg-type]
    assert (
        call(
            server,
            "POST",
            f"{base}/tokens",
            editor,
            json={"name": "x", "role": "viewer", "expires_in_days": 1},
        ).status_code
        == 403
    )
    owner_token = ok(
        call(
            server,
            "POST",
            f"{base}/tokens",
            owner,
            json={"name": "own", "role": "owner", "expires_in_days": 1},
        )
    )["token"]
    # an owner token can mint tokens, but not above owner; an editor one cannot at all
    too_high = call(server, "POST", f"{base}/tokens", token,
                    json={"name": "y", "role": "owner", "expires_in_days": 1})  # fmt: skip
    assert too_high.status_code == 403
    assert (
        call(
            server,
            "POST",
            f"{base}/tokens",
            owner_token,
            json={"name": "z", "role": "owner", "expires_in_days": 1},
        ).status_code
        == 201
    )
    # revoked: refused with a clear message
    ok(call(server, "DELETE", f"{base}/tokens/{created['id']}", owner))
    revoked = call(server, "GET", f"{base}/runs", token)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    # expired
    expiring = ok(call(server, "POST", f"{base}/tokens", owner,
                       json={"name": "old", "role": "viewer", "expires_in_days": 1}))  # fmt: skip
    from sqlalchemy import update

    from argosy.stores.metadata.tables import ApiToken

    with db.session() as s:
        s.execute(update(ApiToken).where(ApiToken.id == expiring["id"])
                  .values(expires_at=datetime(2020, 1, 1, tzinfo=UTC)))  # fmt: skip
    expired = call(server, "GET", f"{base}/runs", expiring["token"])
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert call(server, "GET", f"{base}/runs", "argosy_not-a-real-token").status_code == 401


def test_token_role_is_capped_by_the_creator(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    """A token-owner principal that is only editor cannot mint an owner token (unit level)."""
    from argosy.auth.tokens import create_token
    from argosy.errors import UsageError

    with pytest.raises(UsageError, match="cannot create a token with the owner role"):
        create_token(
            cast(Any, None), tenant="t", name="n", role=Role.owner,
            lifetime=__import__("datetime").timedelta(days=1), created_by="u",
            creator_role=Role.editor, now=datetime.now(UTC),
        )  # fmt: skip


# -- fail closed ----------------------------------------------------------------------------
def test_the_server_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "argosy.server.serve", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "ARGOSY_OIDC_ISSUER" in lines[0] and "--insecure-dev" in lines[0]
    # insecure development mode: loopback only
    env["ARGOSY_INSECURE_DEV"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "argosy.server.serve", "--port", "0", "--host", "0.0.0.0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "0.0.0.0" in done.stderr and "--insecure-dev" in done.stderr


def test_insecure_dev_announces_itself(tmp_path: Path) -> None:
    server = start_server(tmp_path / "dev")
    try:
        response = httpx.get(f"{server.url}{API_PREFIX}/me", timeout=10)
        assert response.headers["x-argosy-insecure"] == "true"
        assert response.json()["kind"] == "local" and response.json()["insecure"] is True
        assert "INSECURE" in server.log()
    finally:
        server.stop(timeout=20)


# -- the CLI --------------------------------------------------------------------------------
def test_cli_tenants_members_tokens_and_login(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str], tmp_path: Path
) -> None:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    base.update(ARGOSY_SERVER=server.url, XDG_CONFIG_HOME=str(tmp_path / "config"),
                ARGOSY_HOME=str(tmp_path / "state"))  # fmt: skip

    def argosy(*args: str, token: str | None = None, tenant: str = "default") -> Any:
        env = dict(base, ARGOSY_TENANT=tenant)
        if token:
            env["ARGOSY_TOKEN"] = token
        return subprocess.run([sys.executable, "-m", "argosy.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    admin = oidc_issuer.token(**ADMIN)  # type: ignore[arg-type]
    done = argosy("login", "--token", admin)
    assert done.returncode == 0, done.stderr
    assert "root-admin" in done.stdout
    stored = tmp_path / "config" / "argosy" / "credentials"
    assert stored.stat().st_mode & 0o777 == 0o600
    # the stored token is used when ARGOSY_TOKEN is unset
    assert argosy("tenants", "create", "cli-team").returncode == 0
    done = argosy("members", "add", "--role", "owner", "--group", "cli-owners", tenant="cli-team")
    assert done.returncode == 0, done.stderr
    listed = json.loads(argosy("members", "list", "-o", "json", tenant="cli-team").stdout)
    assert [(m["role"], m["subject"]) for m in listed["members"]] == [("owner", "cli-owners")]
    owner = oidc_issuer.token(sub="cleo", groups=["cli-owners"])
    done = argosy("tokens", "create", "ci", "--role", "editor", "--expires-in", "30d",
                  token=owner, tenant="cli-team")  # fmt: skip
    assert done.returncode == 0, done.stderr
    api_token = done.stdout.splitlines()[0]
    assert api_token.startswith("argosy_")
    tokens = json.loads(
        argosy("tokens", "list", "-o", "json", token=owner, tenant="cli-team").stdout
    )
    assert api_token not in json.dumps(tokens)
    assert argosy("tokens", "list", token=api_token, tenant="cli-team").returncode == 3
    done = argosy("tenants", "create", "nope", token=owner)
    assert done.returncode == 3 and "403" in done.stderr and "platform admin" in done.stderr
    assert argosy("tokens", "revoke", tokens["tokens"][0]["id"], token=owner,
                  tenant="cli-team").returncode == 0  # fmt: skip
    done = argosy("tenants", "list", token=api_token)
    assert done.returncode == 3 and "revoked" in done.stderr
