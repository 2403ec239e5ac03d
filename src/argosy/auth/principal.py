"""The caller of a request: a user (OIDC/SCIM), a service account (API token), or nobody."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    ``subject`` is the stable identity (the IdP's user claim, or ``token:<id>`` for an API
    token); ``groups`` come from the access token's configured groups claim, so a change in
    the identity provider takes effect at the next token. An API token carries its one
    ``token_tenant`` and ``token_role`` instead of groups.
    """

    subject: str
    name: str
    kind: str = "user"  # user | service | anonymous | local
    groups: tuple[str, ...] = ()
    platform_admin: bool = False
    token_tenant: str | None = None
    token_role: str | None = None
    claims: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal(subject="anonymous", name="anonymous", kind="anonymous")
