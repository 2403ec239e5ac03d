"""The artifact backend of a task process on a server: the server's task-store endpoint.

Every call carries the attempt's task token (``auth/task_credentials.py``); the server lets
the task read exactly its inputs and write exactly its own outputs and records. The URL
scheme is ``argosy-task+http://HOST:PORT`` (or ``+https``); ``open_artifact_store`` picks
this backend for it, so the launcher needs no change.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from argosy.errors import StoreError
from argosy.stores.artifacts.base import ByteStore

SCHEME = "argosy-task+"
CHUNK = 1024 * 1024


class TaskStoreClient(ByteStore):
    def __init__(self, url: str, token: str, timeout: float = 300.0) -> None:
        self.base = url.removeprefix(SCHEME).rstrip("/") + "/api/v1/task-store"
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=30.0),
        )

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> TaskStoreClient:
        token = (options or {}).get("token")
        if not token:
            raise StoreError("the task store needs the attempt's task token; this is a bug")
        return cls(url, str(token))

    def _url(self, key: str) -> str:
        return f"{self.base}/{quote(key, safe='/')}"

    def _check(self, response: httpx.Response, key: str) -> None:
        if response.status_code == 404:
            raise FileNotFoundError(key)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise StoreError(f"the server refused {response.request.method} {key}: {detail}")

    def put_file(self, key: str, source: Path, *, move: bool = False) -> None:
        with source.open("rb") as f:
            response = self._http.put(self._url(key), content=iter(lambda: f.read(CHUNK), b""))
        self._check(response, key)
        if move:
            source.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._check(self._http.put(self._url(key), content=data), key)

    def open(self, key: str) -> BinaryIO:
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
        try:
            with self._http.stream("GET", self._url(key)) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response, key)
                for chunk in response.iter_bytes(CHUNK):
                    spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def exists(self, key: str) -> bool:
        response = self._http.head(self._url(key))
        if response.status_code == 404:
            return False
        self._check(response, key)
        return True

    def list(self, prefix: str) -> Iterator[str]:
        response = self._http.get(self.base, params={"prefix": prefix})
        self._check(response, prefix)
        yield from response.json()["keys"]

    def rename(self, key: str, new_key: str) -> None:
        response = self._http.post(f"{self.base}-rename", json={"key": key, "new_key": new_key})
        self._check(response, key)
