"""Live servers for the security tests (issue 13), on SQLite and on PostgreSQL.

``secure_server(request, ...)`` starts one ``argosy server`` that authenticates with the test
OIDC issuer, on the backend named by ``request.param`` (``sqlite``: a file in its state folder;
``postgresql``: a fresh database cloned from the session's migrated template), and yields it
with a :class:`MetadataStore` on the same database. A module uses it from a module-scoped
fixture parametrized with :data:`BACKENDS`, so every test of the module runs on both::

    @pytest.fixture(scope="module", params=BACKENDS)
    def live(request, oidc_issuer, tmp_path_factory):
        with secure_server(request, oidc_issuer, tmp_path_factory, "chains") as found:
            yield found

``ARGOSY_TEST_BACKENDS=sqlite`` skips PostgreSQL (as in ``conftest.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from argosy.api import API_PREFIX
from argosy.stores.metadata.db import MetadataStore
from tests.oidc_issuer import OidcIssuer
from tests.server_fixture import ServerProcess, oidc_env, start_server

_WANTED = os.environ.get("ARGOSY_TEST_BACKENDS", "sqlite,postgresql").split(",")
BACKENDS = [
    pytest.param(b, marks=[pytest.mark.postgresql] if b == "postgresql" else [], id=b)
    for b in ("sqlite", "postgresql")
    if b in _WANTED
]
ADMIN = {"sub": "sec-admin", "groups": ["platform-admins"]}


@dataclass
class Live:
    """A running server, its database and the issuer its users' tokens come from."""

    server: ServerProcess
    db: MetadataStore
    issuer: OidcIssuer

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, sub: str, groups: list[str] | None = None) -> str:
        return self.issuer.token(sub=sub, groups=groups or [])

    def admin(self) -> str:
        return self.issuer.token(**ADMIN)  # type: ignore[arg-type]

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def ok(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        response = self.call(method, path, token, **kw)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def tenant(self, name: str, *bindings: tuple[str, str, str]) -> str:
        """Create tenant ``name`` (as the admin) with ``(role, subject_kind, subject)`` bindings."""
        admin = self.admin()
        self.ok("POST", f"{API_PREFIX}/tenants", admin, json={"name": name})
        for role, kind, subject in bindings:
            self.ok("POST", f"{API_PREFIX}/tenants/{name}/members", admin,
                    json={"role": role, "subject_kind": kind, "subject": subject})  # fmt: skip
        return name


@contextmanager
def secure_server(
    request: pytest.FixtureRequest,
    issuer: OidcIssuer,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    **env: str,
) -> Iterator[Live]:
    backend = getattr(request, "param", "sqlite")
    home = tmp_path_factory.mktemp(f"{name}-{backend}")
    settings = oidc_env(issuer.issuer, **env)
    database: str | None = None
    cluster: Any = None
    if backend == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        database = cluster.clone(request.getfixturevalue("pg_template"))
        settings["ARGOSY_DATABASE_URL"] = url = cluster.url(database)
    else:
        url = f"sqlite:///{home / 'argosy.db'}"
    server = start_server(home, settings)
    db = MetadataStore.open(url)
    try:
        yield Live(server, db, issuer)
    finally:
        db.close()
        server.stop(timeout=30)
        if database is not None:
            cluster.drop_database(database)
