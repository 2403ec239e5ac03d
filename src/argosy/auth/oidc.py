"""The OIDC resource server: bearer access tokens (JWTs) checked against the issuer's keys.

The issuer's discovery document (``{issuer}/.well-known/openid-configuration``) names its
``jwks_uri``; the key set is cached. A token whose ``kid`` is not in the cache triggers one
refetch of the key set at most once per ``refetch_seconds`` (``ARGOSY_OIDC_JWKS_REFETCH_SECONDS``,
default 60), so a flood of tokens with made-up ``kid``\\ s costs the issuer one request. Keys
are also refreshed when the cache is older than ``max_age_seconds``, so a key the issuer
removed stops validating.

Checks, in order: the algorithm is in the allow-list (never ``none``, never ``HS*``) and
matches the key's type; the signature; ``iss``; ``exp`` and ``iat`` present; ``exp``,
``nbf``, ``iat`` within the leeway; the audience (``oidc_audience_claim``: ``aud``, or e.g.
``client_id`` for Cognito access tokens); that it is an access token and not an ID token
(``oidc_access_token_rule``: JWT header ``typ`` ``at+jwt`` per RFC 9068, Cognito's
``token_use == "access"``, or the audience alone). Every failure is an :class:`InvalidToken`
whose message says what was wrong (the 401's ``error_description``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt import PyJWK

from argosy.config import Settings

log = logging.getLogger("argosy.auth")

REFETCH_ENV = "ARGOSY_OIDC_JWKS_REFETCH_SECONDS"
ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}
# the JWK key type each algorithm family needs
_KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class InvalidToken(Exception):
    """A bearer token that does not authenticate anyone; the message says why."""


class IssuerUnavailable(Exception):
    """The issuer's discovery document or key set cannot be fetched."""


@dataclass(frozen=True)
class VerifiedToken:
    """What a valid access token says about its caller."""

    subject: str
    name: str
    groups: tuple[str, ...]
    claims: dict[str, Any]


def _key_type(alg: str) -> str | None:
    return _KEY_TYPE.get(alg[:2])


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def groups_of(value: object) -> tuple[str, ...]:
    """The groups in a claim: a list of strings, or one space-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(g for g in value.split() if g)
    if isinstance(value, list | tuple):
        return tuple(str(g) for g in value if isinstance(g, str | int) and str(g))
    raise InvalidToken("the groups claim is neither a list nor a space-separated string")


class OidcVerifier:
    """Verifies access tokens of one issuer (thread-safe; one per server process)."""

    def __init__(
        self,
        settings: Settings,
        *,
        refetch_seconds: float | None = None,
        max_age_seconds: float = 3600.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise ValueError("OIDC needs an issuer and an audience")
        self.issuer = settings.oidc_issuer.rstrip("/")
        if not self.issuer.startswith("https://") and not _loopback(self.issuer):
            raise ValueError(
                f"the OIDC issuer {self.issuer!r} must be an https:// URL (plain http only on "
                "loopback, for tests)"
            )
        self.audience = settings.oidc_audience
        self.settings = settings
        bad = [a for a in settings.oidc_algorithms if a.lower() == "none" or a.startswith("HS")]
        unknown = [a for a in settings.oidc_algorithms if _key_type(a) is None]
        if bad or unknown:
            raise ValueError(
                f"ARGOSY_OIDC_ALGORITHMS may only name asymmetric algorithms (RS*, PS*, ES*, "
                f"EdDSA); remove {', '.join(bad + unknown)}"
            )
        self.algorithms = list(settings.oidc_algorithms)
        if refetch_seconds is None:
            refetch_seconds = float(os.environ.get(REFETCH_ENV, "60"))
        self.refetch_seconds = refetch_seconds
        self.max_age_seconds = max_age_seconds
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._jwks_uri: str | None = None
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._refetched_at: float | None = None  # the last refetch an unknown kid caused

    # -- keys -----------------------------------------------------------------------------------
    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = httpx.get(url, timeout=self.timeout, follow_redirects=False)
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IssuerUnavailable(f"cannot fetch {url}: {exc}") from None
        if not isinstance(doc, dict):
            raise IssuerUnavailable(f"{url} did not answer a JSON object")
        return doc

    def _fetch(self) -> None:
        """(Re)load the key set (and the discovery document the first time). Lock held."""
        if self._jwks_uri is None:
            discovery = self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if str(discovery.get("issuer", "")).rstrip("/") != self.issuer:
                raise IssuerUnavailable(
                    f"the discovery document names issuer {discovery.get('issuer')!r}, not "
                    f"{self.issuer!r}; fix ARGOSY_OIDC_ISSUER"
                )
            uri = discovery.get("jwks_uri")
            if not isinstance(uri, str):
                raise IssuerUnavailable("the issuer's discovery document has no jwks_uri")
            self._jwks_uri = uri
        jwks = self._get_json(self._jwks_uri)
        keys: dict[str, dict[str, Any]] = {}
        for key in jwks.get("keys", []):
            if isinstance(key, dict) and key.get("use", "sig") == "sig":
                keys[str(key.get("kid", ""))] = key
        self._keys = keys
        self._fetched_at = self.clock()
        log.info("OIDC: loaded %d signing keys from %s", len(keys), self._jwks_uri)

    def _jwk(self, kid: str | None) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.max_age_seconds
            if stale:
                self._fetch()
            found = self._find(kid)
            if found is not None:
                return found
            recently = (
                self._refetched_at is not None and now - self._refetched_at < self.refetch_seconds
            )
            if not stale and not recently:
                self._refetched_at = now
                self._fetch()
                found = self._find(kid)
                if found is not None:
                    return found
        raise InvalidToken(f"the token's signing key {kid!r} is not one of the issuer's keys")

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    # -- tokens ---------------------------------------------------------------------------------
    def verify(self, token: str) -> VerifiedToken:
        """The caller of a valid access token; :class:`InvalidToken` says why one is not."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken(
                f"the token's algorithm {alg!r} is not accepted (accepted: "
                f"{', '.join(self.algorithms)})"
            )
        kid = header.get("kid")
        jwk = self._jwk(kid if isinstance(kid, str) else None)
        if jwk.get("kty") != _key_type(alg) or jwk.get("alg", alg) != alg:
            raise InvalidToken(f"the token's algorithm {alg} does not fit its key {kid!r}")
        try:
            key = PyJWK(jwk, algorithm=alg).key
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                issuer=self.issuer,
                leeway=s.oidc_leeway_seconds,
                options={"require": ["exp", "iat", "iss"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; get a new one") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"the token was not issued by {self.issuer}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is invalid: {exc}") from None
        audience = claims.get(s.oidc_audience_claim)
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise InvalidToken(
                f"the token is not meant for this server (its {s.oidc_audience_claim!r} claim "
                f"does not contain {self.audience!r})"
            )
        rule = s.oidc_access_token_rule
        if rule == "typ" and str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidToken("not an access token (JWT typ is not at+jwt): send an access token")
        if rule == "token_use" and claims.get("token_use") != "access":
            raise InvalidToken("not an access token (token_use is not 'access')")
        subject = claims.get(s.oidc_user_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidToken(f"the token has no {s.oidc_user_claim!r} claim (the user)")
        name = claims.get(s.oidc_name_claim)
        return VerifiedToken(
            subject=subject,
            name=name if isinstance(name, str) and name else subject,
            groups=groups_of(claims.get(s.oidc_groups_claim)),
            claims=claims,
        )
