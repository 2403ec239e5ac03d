"""A local S3-compatible endpoint for the test session (moto's server mode), and fresh buckets.

The server is a real HTTP endpoint on 127.0.0.1 (a free port), so the code under test talks
to it through the same boto3 client, signing and transfer code it uses for AWS; only the
endpoint URL, path-style addressing and "insecure" (plain http) differ. moto accepts any
credentials: tests use ``AWS_ACCESS_KEY_ID=AWS_SECRET_ACCESS_KEY=test`` from the environment
(the standard AWS chain), with profiles, config files and instance metadata switched off.

Fixtures (import them into a test module, or list ``"tests.s3_fixture"`` in ``pytest_plugins``
of ``tests/conftest.py``):

- ``s3_endpoint``: the session's :class:`S3Endpoint` (started once, stopped at the end);
- ``s3_env``: the test's environment pointed at it (AWS_* variables; undone after the test);
- ``s3_bucket``: a new, empty bucket per test, emptied and removed afterwards;
- ``s3_url`` / ``s3_options``: ``s3://<bucket>/argosy`` and the matching
  ``Settings.artifact_options()``-shaped dict for ``open_artifact_store``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TEST_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def aws_test_env(home: Path) -> dict[str, str]:
    """AWS_* variables for moto: fixed test keys, nothing read from the user's AWS setup."""
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class S3Endpoint:
    """One moto server process on loopback: its URL, a boto3 client, buckets."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    def env(self) -> dict[str, str]:
        return aws_test_env(self.workdir)

    def start(self, timeout: float = 60) -> None:
        script = Path(sys.executable).with_name("moto_server")
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
        env = {**os.environ, **self.env()}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> Any:
        """A plain boto3 S3 client on the endpoint (for setup and for checking objects)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        env = self.env()
        return boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=TEST_REGION,
        ).client(
            "s3",
            endpoint_url=self.url,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def options(self, **extra: Any) -> dict[str, Any]:
        """``Settings.artifact_options()`` for this endpoint (plus any tuning options)."""
        return {
            "endpoint_url": self.url,
            "region": TEST_REGION,
            "path_style": True,
            "insecure": True,
            "sse": None,
            "kms_key_id": None,
            "storage_class": None,
            **extra,
        }

    def argosy_env(self, url: str) -> dict[str, str]:
        """Environment variables that point ``argosy`` (and its task processes) at ``url``."""
        return {
            **self.env(),
            "ARGOSY_ARTIFACT_URL": url,
            "ARGOSY_S3_ENDPOINT_URL": self.url,
            "ARGOSY_S3_REGION": TEST_REGION,
            "ARGOSY_S3_PATH_STYLE": "true",
            "ARGOSY_S3_INSECURE": "true",
        }

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"argosy-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        client = self.client()
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    with tempfile.TemporaryDirectory(prefix="argosy-moto-") as tmp:
        endpoint = S3Endpoint(Path(tmp))
        endpoint.start()
        try:
            yield endpoint
        finally:
            endpoint.stop()


@pytest.fixture
def s3_env(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """The test's process environment set for the endpoint (AWS chain = the test keys)."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env: S3Endpoint) -> Iterator[str]:
    name = s3_env.create_bucket()
    yield name
    s3_env.remove_bucket(name)


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/argosy"


@pytest.fixture
def s3_options(s3_env: S3Endpoint) -> dict[str, Any]:
    return s3_env.options()
