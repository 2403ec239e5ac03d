"""Registry credentials and the OCI distribution / Docker registry auth flow, for
``argosy images lock`` (``argosy images build --push`` leaves pushing, and its credentials,
to podman/buildah/docker, which read the same files).

**Where credentials come from** — the files podman (containers/image) reads, in its order; the
first file that holds an entry for the registry wins:

1. ``$REGISTRY_AUTH_FILE`` when set, else ``$XDG_RUNTIME_DIR/containers/auth.json``
   (``/run/containers/UID/auth.json`` without ``XDG_RUNTIME_DIR``) — what ``podman login``
   writes;
2. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/containers/auth.json``);
3. ``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json``) — what ``docker login`` writes.

In a file, ``auths`` is looked up by ``HOST/NAMESPACE/REPO``, then each shorter prefix down to
``HOST`` (``https://HOST`` and ``HOST/v1/``-style keys of docker's files count as ``HOST``);
an entry's ``auth`` is base64 of ``user:password`` and its ``identitytoken`` (where present) is
an OAuth2 refresh token for the registry's token service. A file whose ``credHelpers`` names a
helper for the host (or whose ``credsStore`` names one) has the credential read from
``docker-credential-NAME get``, as docker does.

**The flow** (:class:`RegistryAuth`, an ``httpx.Auth``): the request goes out anonymously; on
``401`` with ``WWW-Authenticate: Basic`` it is sent again with the basic credentials; with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` a token is fetched from the realm
(``GET`` with basic credentials if there are any, anonymously otherwise; ``POST`` with
``grant_type=refresh_token`` for an identity token) and the request is sent again with it.
A ``401`` after that is :class:`RegistryAuthError`: one line naming the registry, the file the
credentials came from (never the credentials) and what to do (``podman login HOST``); the CLI
exits 3, as for a server that refuses a token.

No credential, token or token-service answer is ever printed or logged: errors name the file a
credential came from, and the token request's URL carries only ``service`` and ``scope``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from argosy.errors import ServerError

DOCKER_HUB = "docker.io"
DOCKER_HUB_KEYS = ("index.docker.io", "registry-1.docker.io", "docker.io")
CHALLENGE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


class RegistryAuthError(ServerError):
    """A registry refused us after the auth flow (exit 3, as a server refusing a token)."""


@dataclass(frozen=True)
class Credential:
    """Basic credentials and/or an identity token, and the file they came from."""

    source: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @property
    def basic(self) -> str | None:
        """The ``Authorization: Basic`` value, or None without a user and password."""
        if self.username is None or self.password is None:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def auth_files(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[Path]:
    """The credential files, in the order they are read (see the module's docstring)."""
    env = os.environ if env is None else env
    home = home or Path(env.get("HOME") or Path.home())
    files: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]).expanduser())
    elif env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    else:
        files.append(Path(f"/run/containers/{os.getuid()}/auth.json"))
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    files.append(config_home / "containers" / "auth.json")
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    files.append(docker / "config.json")
    return files


def _normalized_key(key: str) -> str:
    """An ``auths`` key as ``HOST[/PATH]``: docker's ``https://HOST/v1/`` forms are ``HOST``."""
    bare = re.sub(r"^[a-z]+://", "", key.strip()).rstrip("/")
    if key.strip().startswith(("http://", "https://")):
        bare = bare.split("/", 1)[0]  # a URL key names a registry, not a repository
    if bare in DOCKER_HUB_KEYS:
        return DOCKER_HUB
    return bare


def _candidates(host: str, path: str) -> list[str]:
    """``HOST/a/b/c``, ``HOST/a/b``, ``HOST/a``, ``HOST``: most specific first."""
    parts = [p for p in path.split("/") if p]
    return [f"{host}/{'/'.join(parts[:n])}" for n in range(len(parts), 0, -1)] + [host]


def _from_helper(helper: str, host: str, source: str) -> Credential | None:
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        return None
    try:
        proc = subprocess.run(
            [binary, "get"], input=host, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None  # "credentials not found in native keychain": not logged in there
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None
    user, secret = doc.get("Username"), doc.get("Secret")
    where = f"{source} (docker-credential-{helper})"
    if user == "<token>":
        return Credential(where, identity_token=secret)
    return Credential(where, username=user, password=secret)


def _from_entry(entry: object, source: str) -> Credential | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken") or None
    user = entry.get("username")
    password = entry.get("password")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=False).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        user, sep, password = decoded.partition(":")
        if not sep:
            user = password = None
    if user is None and token is None:
        return None
    return Credential(source, username=user or None, password=password, identity_token=token)


def find_credential(
    host: str, path: str, env: Mapping[str, str] | None = None, home: Path | None = None
) -> tuple[Credential | None, list[Path]]:
    """The credential for repository ``path`` on registry ``host`` (None: anonymous), and the
    files that were looked at."""
    host = DOCKER_HUB if host in DOCKER_HUB_KEYS else host
    wanted = _candidates(host, path)
    files = auth_files(env, home)
    for file in files:
        try:
            doc = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # missing or unreadable: podman skips it too
        if not isinstance(doc, dict):
            continue
        auths = {_normalized_key(k): v for k, v in (doc.get("auths") or {}).items()}
        for key in wanted:
            if key in auths:
                found = _from_entry(auths[key], str(file))
                if found is not None:
                    return found, files
        helper = (doc.get("credHelpers") or {}).get(host) or doc.get("credsStore")
        if helper:
            found = _from_helper(str(helper), host, str(file))
            if found is not None:
                return found, files
    return None, files


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate`` as (lower-case scheme, parameters)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): (m[2] if m[2] else m[3]) for m in CHALLENGE.finditer(rest)}
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


class RegistryAuth(httpx.Auth):
    """The registry auth flow for one repository (see the module's docstring). After a
    request, ``refused`` says why a final 401 came back: ``"no credentials"``, ``"token
    service refused the credentials"``, ``"credentials refused"`` or ``""``."""

    requires_response_body = True

    def __init__(self, credential: Credential | None, default_scope: str) -> None:
        self.credential = credential
        self.default_scope = default_scope
        self.authorization: str | None = None  # what worked last: reused on the next request
        self.refused = ""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.authorization is not None:
            request.headers["Authorization"] = self.authorization
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        cred = self.credential
        if scheme == "basic":
            if cred is None or cred.basic is None:
                self.refused = "no credentials"
                return
            self.authorization = cred.basic
        elif scheme == "bearer" and params.get("realm"):
            token = yield from self._token(params)
            if token is None:
                return
            self.authorization = f"Bearer {token}"
        else:
            self.refused = "an authentication scheme Argosy does not speak: " + (scheme or "none")
            return
        request.headers["Authorization"] = self.authorization
        retried = yield request
        if retried.status_code == 401:
            self.refused = "credentials refused" if cred is not None else "no credentials"
            self.authorization = None

    def _token(
        self, params: dict[str, str]
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        realm = params["realm"]
        query = {"scope": params.get("scope") or self.default_scope}
        if params.get("service"):
            query["service"] = params["service"]
        cred = self.credential
        if cred is not None and cred.identity_token:
            form = {**query, "grant_type": "refresh_token", "client_id": "argosy",
                    "refresh_token": cred.identity_token}  # fmt: skip
            asked = httpx.Request("POST", realm, data=form)
        else:
            headers = {"Accept": "application/json"}
            if cred is not None and cred.basic is not None:
                headers["Authorization"] = cred.basic
            asked = httpx.Request("GET", realm, params=query, headers=headers)
        answer = yield asked
        if answer.status_code in (401, 403):
            self.refused = (
                "token service refused the credentials" if cred is not None else "no credentials"
            )
            return None
        try:
            doc = answer.json()
        except ValueError:
            doc = {}
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if answer.status_code != 200 or not token:
            self.refused = f"its token service answered {answer.status_code} without a token"
            return None
        return str(token)


def refusal(reference: str, host: str, auth: RegistryAuth, files: list[Path], status: int) -> str:
    """The one line for a registry that still refuses after the auth flow."""
    cred = auth.credential
    login = f"podman login {host}"
    if cred is None:
        looked = ", ".join(str(f) for f in files)
        return (
            f"registry {host} needs credentials to read {reference} ({status}) and none for "
            f"{host} are in {looked}; log in with '{login}' (or docker login), or set "
            "REGISTRY_AUTH_FILE"
        )
    why = auth.refused or "credentials refused"
    return (
        f"registry {host} refused the credentials for {reference} from {cred.source} "
        f"({status}: {why}); log in again with '{login}', and check that the account may "
        "pull this repository"
    )
