"""Bearer tokens stored by ``argosy login``: ``~/.config/argosy/credentials`` (JSON, one
entry per server URL, mode 0600; ``$XDG_CONFIG_HOME`` is honoured). An entry is the token
itself, or ``{"access_token": ..., "refresh_token": ...}`` after a device login that got a
refresh token. ``ARGOSY_TOKEN`` wins over a stored token."""

from __future__ import annotations

import json
import os
from pathlib import Path


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "argosy" / "credentials"


def stored_token(server: str) -> str | None:
    """The token ``argosy login`` stored for ``server`` (None: none)."""
    path = credentials_path()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    found = doc.get(server.rstrip("/")) if isinstance(doc, dict) else None
    if isinstance(found, dict):
        found = found.get("access_token")
    return found if isinstance(found, str) else None


def stored_refresh_token(server: str) -> str | None:
    """The refresh token a device login stored for ``server`` (None: none)."""
    try:
        doc = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return None
    found = doc.get(server.rstrip("/")) if isinstance(doc, dict) else None
    refresh = found.get("refresh_token") if isinstance(found, dict) else None
    return refresh if isinstance(refresh, str) else None


def store_token(server: str, token: str, refresh_token: str | None = None) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            doc = {}
    except (OSError, ValueError):
        doc = {}
    entry: object = token
    if refresh_token:
        entry = {"access_token": token, "refresh_token": refresh_token}
    doc[server.rstrip("/")] = entry
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.chmod(path, 0o600)
    return path


def refresh_stored_token(server: str, timeout: float = 30.0) -> str | None:
    """Trade the refresh token stored for ``server`` for a new access token at the server's
    identity provider (``GET /api/v1/auth/config`` names it), store both, and return the new
    access token; None when there is no refresh token or the provider refuses it."""
    import httpx

    refresh = stored_refresh_token(server)
    if not refresh:
        return None
    try:
        config = httpx.get(f"{server.rstrip('/')}/api/v1/auth/config", timeout=timeout).json()
        endpoint, client_id = config.get("token_endpoint"), config.get("client_id")
        if not endpoint or not client_id:
            return None
        answer = httpx.post(
            endpoint,
            data={"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id},
            timeout=timeout,
        )
    except (httpx.HTTPError, ValueError):
        return None
    if answer.status_code != 200:
        return None
    doc = answer.json()
    access = doc.get("access_token")
    if not isinstance(access, str):
        return None
    store_token(server, access, doc.get("refresh_token") or refresh)
    return access
