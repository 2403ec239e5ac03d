"""The artifact backend of a task process on a server: the server's task-store endpoint.

Every call carries the attempt's task token (``auth/task_credentials.py``); the server lets
the task read exactly its inputs and write exactly its own outputs and records. The URL
scheme is ``argosy-task+http://HOST:PORT`` (or ``+https``); ``open_artifact_store`` picks
this backend for it, so the launcher needs no change.

On an S3 deployment blob bytes go straight between the task and S3 through presigned URLs
for exactly the granted objects (``server/routes/task_direct.py``): a read asks for a redirect
(``X-Argosy-Direct: s3``) and follows it without the token; an upload asks for a presigned
PUT, sends the bytes, and reports the object's ETag so the server records it as this
attempt's upload. Whenever the direct way is not offered or fails, the bytes go through the
task store as before. A task store that is briefly unreachable (a server restart, a rollout
behind the Service) is retried for up to ``RETRY_SECONDS``.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from argosy.errors import StoreError
from argosy.stores.artifacts.base import ByteStore

SCHEME = "argosy-task+"
CHUNK = 1024 * 1024
RETRY_SECONDS = 120.0  # how long a task waits for an unreachable task store
MAX_DIRECT_PUT = 5 * 1024**3  # S3's largest single PUT; larger blobs go through the server
_RETRY_STATUS = (502, 503, 504)
_BLOB_KEY = re.compile(r"^tenants/[a-z0-9-]+/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}$")
DIRECT = {"X-Argosy-Direct": "s3"}


@functools.cache
def _tls(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()  # reads SSL_CERT_FILE / SSL_CERT_DIR itself


def tls_context() -> ssl.SSLContext:
    """The CA bundle loaded once per process (each load costs ~15 ms; a server's warm parent
    loads it for the tasks it forks)."""
    return _tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


class TaskStoreClient(ByteStore):
    def __init__(self, url: str, token: str, timeout: float = 300.0) -> None:
        root = url.removeprefix(SCHEME).rstrip("/") + "/api/v1"
        self.base = root + "/task-store"
        self._uploads = root + "/task-store-uploads"
        timeouts = httpx.Timeout(timeout, connect=30.0)
        tls = tls_context()
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=timeouts, verify=tls
        )
        self._direct = httpx.Client(timeout=timeouts, verify=tls)  # presigned URLs: no token
        self.direct_transfers = 0  # blobs moved task <-> object store without the server

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

    def _send(
        self, call: Callable[[], httpx.Response], *, idempotent: bool = True
    ) -> httpx.Response:
        """``call()``, again while the task store cannot be reached (or, for an idempotent
        request, answers 502/503/504) — for up to ``RETRY_SECONDS``."""
        deadline = time.monotonic() + RETRY_SECONDS
        pause = 0.25
        while True:
            try:
                response = call()
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if time.monotonic() + pause > deadline:
                    raise
            except httpx.TransportError:
                if not idempotent or time.monotonic() + pause > deadline:
                    raise
            else:
                retry = idempotent and response.status_code in _RETRY_STATUS
                if not retry or time.monotonic() + pause > deadline:
                    return response
                response.close()
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    # -- writes ---------------------------------------------------------------------------------
    def put_file(self, key: str, source: Path, *, move: bool = False) -> None:
        if not (_BLOB_KEY.match(key) and self._put_direct(key, source, None)):

            def put() -> httpx.Response:
                with source.open("rb") as f:
                    return self._http.put(self._url(key), content=iter(lambda: f.read(CHUNK), b""))

            self._check(self._send(put), key)
        if move:
            source.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        if _BLOB_KEY.match(key) and self._put_direct(key, None, data):
            return
        self._check(self._send(lambda: self._http.put(self._url(key), content=data)), key)

    def _put_direct(self, key: str, source: Path | None, data: bytes | None) -> bool:
        """Upload a blob to the object store with a presigned PUT; False when the server
        offers none (or it failed): then the bytes go through the task store."""
        size = len(data) if data is not None else source.stat().st_size if source else 0
        if size > MAX_DIRECT_PUT:
            return False
        offer = self._send(lambda: self._http.post(self._uploads, json={"key": key}))
        if offer.status_code != 201:
            if offer.status_code not in (204, 404, 409):  # 404: a server without the route
                self._check(offer, key)
            return False
        doc = offer.json()
        try:
            if source is not None:
                with source.open("rb") as f:  # a file: sent with its Content-Length
                    sent = self._direct.put(doc["url"], content=f, headers=doc["headers"])
            else:
                sent = self._direct.put(doc["url"], content=data, headers=doc["headers"])
        except httpx.HTTPError:
            return False
        if sent.status_code >= 300:  # 412: stored meanwhile; anything else: the slow way
            return False
        etag = sent.headers.get("etag", "")
        done = self._send(
            lambda: self._http.post(f"{self._uploads}/done", json={"key": key, "etag": etag})
        )
        self._check(done, key)
        self.direct_transfers += 1
        return True

    # -- reads ----------------------------------------------------------------------------------
    def _get(self, key: str, headers: Mapping[str, str]) -> httpx.Response:
        request = self._http.build_request("GET", self._url(key), headers=headers)
        return self._send(lambda: self._http.send(request, stream=True))

    def open(self, key: str) -> BinaryIO:
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
        try:
            response = self._get(key, DIRECT if _BLOB_KEY.match(key) else {})
            try:
                location = response.headers.get("location")
                if response.status_code == 307 and location:
                    if self._get_direct(location, spool):
                        self.direct_transfers += 1
                        spool.seek(0)
                        return spool
                    spool.seek(0)
                    spool.truncate()
                    response.close()
                    response = self._get(key, {})  # the bytes through the task store, then
                if response.status_code >= 400:
                    response.read()
                    self._check(response, key)
                for chunk in response.iter_bytes(CHUNK):
                    spool.write(chunk)
            finally:
                response.close()
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def _get_direct(self, url: str, spool: BinaryIO) -> bool:
        """Read a presigned URL into ``spool``; False if that failed (then the task store)."""
        try:
            with self._direct.stream("GET", url) as response:
                if response.status_code != 200:
                    return False
                for chunk in response.iter_bytes(CHUNK):
                    spool.write(chunk)
        except httpx.HTTPError:
            return False
        return True

    def exists(self, key: str) -> bool:
        response = self._send(lambda: self._http.head(self._url(key)))
        if response.status_code == 404:
            return False
        self._check(response, key)
        return True

    def list(self, prefix: str) -> Iterator[str]:
        response = self._send(lambda: self._http.get(self.base, params={"prefix": prefix}))
        self._check(response, prefix)
        yield from response.json()["keys"]

    def rename(self, key: str, new_key: str) -> None:
        response = self._send(
            lambda: self._http.post(f"{self.base}-rename", json={"key": key, "new_key": new_key}),
            idempotent=False,
        )
        self._check(response, key)
