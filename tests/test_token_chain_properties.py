"""A property of API token chains (issue 13): whatever the chains, role changes, group changes,
deactivations and revocations, no request with a token succeeds above the live minimum role of
its chain — and every request the chain allows does succeed.

Hypothesis generates the histories; each request goes through the whole application in process
(admission, authentication, the authorization function, the route), against a model of what
the chain should allow at that moment.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from argosy.api import API_PREFIX
from argosy.auth import bindings as tb
from argosy.auth import tokens
from argosy.auth.policy import Role
from argosy.auth.standing import remember_groups
from argosy.config import Settings
from argosy.server.app import create_app
from argosy.server.context import ServerContext
from argosy.stores.metadata.tables import ApiToken, KnownGroups, RoleBinding, User

TENANT = "prop"
USERS = ("u0", "u1", "u2")
GROUPS = {"g-viewer": Role.viewer, "g-editor": Role.editor, "g-owner": Role.owner}
ROLES = [Role.viewer, Role.editor, Role.owner]
# (method, path, body, the role it needs, the status when allowed)
REQUESTS = [
    ("GET", "/runs", None, Role.viewer, 200),
    ("POST", "/runs", {"pipeline": "nope"}, Role.editor, 404),
    ("GET", "/tokens", None, Role.owner, 200),
]


@dataclass
class Token:
    value: str
    role: Role
    parent: int | None  # index of the parent token; None: created by ``user``
    user: str
    revoked: bool = False


@dataclass
class Model:
    bound: dict[str, Role | None] = field(default_factory=lambda: dict.fromkeys(USERS))
    groups: dict[str, frozenset[str]] = field(
        default_factory=lambda: {u: frozenset() for u in USERS}
    )
    active: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(USERS, True))
    tokens: list[Token] = field(default_factory=list)

    def user_role(self, user: str) -> Role | None:
        roles = [GROUPS[g] for g in self.groups[user]]
        if self.bound[user] is not None:
            roles.append(self.bound[user])  # type: ignore[arg-type]
        return max(roles) if roles else None

    def live(self, index: int) -> tuple[bool, Role | None]:
        """(whether the chain authenticates at all, the role it may act with)."""
        token = self.tokens[index]
        role: Role | None = token.role
        while True:
            if token.revoked:
                return False, None
            role = min(role, token.role) if role is not None else None
            if token.parent is None:
                break
            token = self.tokens[token.parent]
        if not self.active[token.user]:
            return False, None
        standing = self.user_role(token.user)
        return True, (min(role, standing) if role is not None and standing is not None else None)


@pytest.fixture(scope="module")
def app_and_context() -> Iterator[tuple[Any, ServerContext]]:
    home = Path(tempfile.mkdtemp(prefix="argosy-chains-"))
    context = ServerContext.open(
        Settings(home=home, insecure_dev=False, encryption=False, rate_limit_per_minute=0)
    )
    now = datetime.now(UTC)
    with context.metadata.session() as s:
        tb.create_tenant(s, TENANT, display_name=None, created_by="test", now=now)
        for group, role in GROUPS.items():
            tb.add_binding(s, TENANT, role=role, subject_kind="group", subject=group,
                           created_by="test", now=now)  # fmt: skip
        for user in USERS:
            s.add(User(id=user.upper().rjust(26, "0"), external_id=user, user_name=user,
                       display_name=None, emails=None, active=True, created_at=now,
                       updated_at=now, deactivated_at=None))  # fmt: skip
    yield create_app(context), context
    context.metadata.close()


def reset(context: ServerContext) -> None:
    with context.metadata.session() as s:
        s.execute(delete(ApiToken))
        s.execute(delete(KnownGroups))
        s.execute(delete(RoleBinding).where(RoleBinding.subject_kind == "user"))
        s.execute(update(User).values(active=True))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("bind"), st.sampled_from(USERS), st.sampled_from([None, *ROLES])),
        st.tuples(
            st.just("groups"),
            st.sampled_from(USERS),
            st.frozensets(st.sampled_from(sorted(GROUPS))),
        ),
        st.tuples(st.just("root"), st.sampled_from(USERS), st.sampled_from(ROLES)),
        st.tuples(st.just("mint"), st.integers(0, 20), st.sampled_from(ROLES)),
        st.tuples(st.just("revoke"), st.integers(0, 20)),
        st.tuples(st.just("active"), st.sampled_from(USERS), st.booleans()),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(history=operations)
def test_no_request_succeeds_above_the_live_minimum_role_of_its_chain(
    app_and_context: tuple[Any, ServerContext], history: list[tuple[Any, ...]]
) -> None:
    app, context = app_and_context
    reset(context)
    model = Model()
    now = datetime.now(UTC)

    async def play() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            base = f"{API_PREFIX}/tenants/{TENANT}"

            async def call(token: str, method: str, path: str, body: Any) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                response = await http.request(method, base + path, json=body, headers=headers)
                return response.status_code

            for op in history:
                kind = op[0]
                if kind == "bind":
                    _, user, role = op
                    with context.metadata.session() as s:
                        s.execute(delete(RoleBinding).where(
                            RoleBinding.subject_kind == "user", RoleBinding.subject == user))  # fmt: skip
                        if role is not None:
                            tb.add_binding(s, TENANT, role=role, subject_kind="user",
                                           subject=user, created_by="test", now=now)  # fmt: skip
                    model.bound[user] = role
                elif kind == "groups":  # the user logs in again, now in these groups
                    _, user, groups = op
                    with context.metadata.session() as s:
                        remember_groups(s, user, groups, now)
                    model.groups[user] = groups
                elif kind == "root":  # a token the user made (as the tokens route would)
                    _, user, role = op
                    with context.metadata.session() as s:
                        _, value = tokens.create_token(
                            s, tenant=TENANT, name="t", role=role, lifetime=timedelta(days=1),
                            created_by=user, creator_role=None, now=now,
                        )  # fmt: skip
                    model.tokens.append(Token(value, role, None, user))
                elif kind == "mint" and model.tokens:
                    _, index, role = op
                    index %= len(model.tokens)
                    parent = model.tokens[index]
                    alive, live = model.live(index)
                    response = await http.post(
                        f"{base}/tokens", headers={"Authorization": f"Bearer {parent.value}"},
                        json={"name": "child", "role": role.name, "expires_in_days": 1},
                    )  # fmt: skip
                    expected = 401 if not alive else 201 if live == Role.owner else 403
                    assert response.status_code == expected, (op, model, response.text)
                    if response.status_code == 201:
                        child = response.json()["token"]
                        model.tokens.append(Token(child, role, index, parent.user))
                elif kind == "revoke" and model.tokens:
                    index = op[1] % len(model.tokens)
                    with context.metadata.session() as s:
                        row_id = _id_of(s, model.tokens[index].value)
                        tokens.revoke_token(s, TENANT, row_id, now)
                    _revoke_below(model, index)
                elif kind == "active":
                    _, user, active = op
                    with context.metadata.session() as s:
                        s.execute(
                            update(User).where(User.external_id == user).values(active=active)
                        )
                    model.active[user] = active

            for index, token in enumerate(model.tokens):
                alive, live = model.live(index)
                for method, path, body, needs, allowed in REQUESTS:
                    status = await call(token.value, method, path, body)
                    if not alive:
                        expected = 401
                    elif live is not None and live >= needs:
                        expected = allowed
                    else:
                        expected = 403
                    assert status == expected, (method, path, index, history, model)

    anyio.run(play)


def _id_of(session: Any, value: str) -> str:
    from sqlalchemy import select

    found: str = session.scalar(
        select(ApiToken.id).where(ApiToken.token_hash == tokens.hash_token(value))
    )
    return found


def _revoke_below(model: Model, index: int) -> None:
    """Revoking a token revokes what it minted (the model of ``revoke_minted``)."""
    model.tokens[index].revoked = True
    for child, token in enumerate(model.tokens):
        if token.parent == index and not token.revoked:
            _revoke_below(model, child)
