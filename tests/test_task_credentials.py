"""Least-privilege task credentials: what a task process on a server can and cannot reach."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from argosy.auth.task_credentials import TaskClaims, TaskTokenError, TaskTokens
from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.server_fixture import start_server


def claims(expires_in: float = 60.0) -> TaskClaims:
    return TaskClaims("01ATTEMPT", "team-a", "01RUN", "train", 1, time.time() + expires_in)


def test_a_task_token_is_bound_to_its_attempt_and_refused_when_forged_or_expired() -> None:
    tokens = TaskTokens()
    mine = claims()
    token = tokens.mint(mine)
    assert tokens.verify(token) == mine
    assert mine.record_prefix == "tenants/team-a/runs/01RUN/train/1/"
    head, body, mac = token.split(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    with pytest.raises(TaskTokenError, match="not issued by this server"):
        tokens.verify(f"{head}.{forged_body}.{mac}")
    with pytest.raises(TaskTokenError, match="not issued by this server"):
        TaskTokens().verify(token)  # another instance's key
    with pytest.raises(TaskTokenError, match="expired"):
        tokens.verify(tokens.mint(claims(expires_in=-1)))
    with pytest.raises(TaskTokenError, match="malformed"):
        tokens.verify("Bearer nonsense")


PROBE = textwrap.dedent(
    """
    import json, os
    from pathlib import Path
    import httpx
    from argosy import pipeline, step

    @step
    def make() -> str:
        return "payload"

    @step
    def probe(value: str) -> dict:
        inv = json.loads(Path("../invocation.json").read_text())
        store = inv["store"]
        base = store["url"].removeprefix("argosy-task+") + "/api/v1/task-store/"
        auth = {"Authorization": "Bearer " + store["options"]["token"]}
        other = "0" * 64
        def status(method, key):
            return httpx.request(method, base + key, headers=auth).status_code
        mine = inv["tenant"]
        return {
            "value": value,
            "aws_env": sorted(k for k in os.environ if k.startswith("AWS_")),
            "db_env": "ARGOSY_DATABASE_URL" in os.environ,
            "store_scheme": store["url"].split("://")[0],
            "other_tenant_blob": status("GET", f"tenants/team-b/blobs/sha256/00/{other}"),
            "own_tenant_foreign_blob": status("GET", f"tenants/{mine}/blobs/sha256/00/{other}"),
            "other_run_record": status("GET", f"tenants/{mine}/runs/01OTHERRUN/x/1/result.json"),
            "write_other_attempt": status("PUT", f"tenants/{mine}/runs/{inv['run_id']}/make/1/result.json"),
            "traversal": status("GET", f"tenants/{mine}/runs/{inv['run_id']}/probe/1/../../make/1/result.json"),
            "no_token": httpx.get(base + f"tenants/{mine}/blobs/sha256/00/{other}").status_code,
        }

    @pipeline
    def probing():
        probe(make())
    """
)


def test_a_server_task_reaches_only_its_own_inputs_and_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "credentials_probe.py").write_text(PROBE)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'credentials_probe.py'}:probing"))
    server = start_server(
        tmp_path / "server",
        {"ARGOSY_INSECURE_DEV": "true", "AWS_ACCESS_KEY_ID": "platform-key",
         "AWS_SECRET_ACCESS_KEY": "platform-secret"},
    )  # fmt: skip
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("probing").id, poll=0.2, timeout=120)
            assert run.status == "succeeded", run.error
            seen = {a.node_path: a.value for a in client.artifacts(run.id)}["probe"]
    finally:
        server.stop()
    assert seen["value"] == "payload"  # its declared input came through the task store
    assert seen["store_scheme"] == "argosy-task+http"
    assert seen["aws_env"] == [] and seen["db_env"] is False  # no platform credentials
    assert seen["other_tenant_blob"] == 403
    assert seen["own_tenant_foreign_blob"] == 403  # not one of its inputs
    assert seen["other_run_record"] == 403
    assert seen["write_other_attempt"] == 403
    assert seen["traversal"] == 403
    assert seen["no_token"] == 401


DIRECT = textwrap.dedent(
    """
    import httpx
    from argosy import pipeline, step

    @step
    def make() -> str:
        return "payload"

    @step
    def go_around(value: str, endpoint: str, bucket: str) -> dict:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import ClientError, NoCredentialsError

        import json
        from pathlib import Path

        seen = {"value": value}
        inv = json.loads(Path("../invocation.json").read_text())
        sha = inv["inputs"]["value"]["artifact"]["sha256"]  # an object that exists
        key = f"argosy/tenants/default/blobs/sha256/{sha[:2]}/{sha}"
        try:
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").list_objects_v2(
                Bucket=bucket)
            seen["signed"] = "listed"
        except NoCredentialsError:
            seen["signed"] = "no credentials"
        def refusal(client) -> list:
            try:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                return ["read", body.decode(errors="replace")]
            except ClientError as exc:
                return [exc.response["ResponseMetadata"]["HTTPStatusCode"],
                        exc.response["Error"]["Code"]]

        unsigned = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                config=Config(signature_version=UNSIGNED))
        seen["unsigned_get"] = refusal(unsigned)
        forged = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="AKIAMADEUP000000", aws_secret_access_key="x" * 40)
        seen["forged_get"] = refusal(forged)
        raw = httpx.get(f"{endpoint}/{bucket}/{key}")
        seen["raw_get"] = [raw.status_code, raw.text]
        return seen

    @pipeline
    def around(endpoint: str, bucket: str):
        go_around(make(), endpoint, bucket)
    """
)


def test_a_server_task_cannot_reach_the_object_store_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against an S3 endpoint that enforces authentication (moto with IAM checks on): the
    server's own credentials work, the task has none, and unsigned requests are refused."""
    import boto3

    from tests.s3_fixture import TEST_REGION, S3Endpoint

    endpoint = S3Endpoint(tmp_path / "s3")
    (tmp_path / "s3").mkdir()
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "4")  # then IAM is enforced
    endpoint.start()
    try:
        setup = {"endpoint_url": endpoint.url, "region_name": TEST_REGION,
                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}  # fmt: skip
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="argosy-server")
        key = iam.create_access_key(UserName="argosy-server")["AccessKey"]
        policy = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
        iam.put_user_policy(UserName="argosy-server", PolicyName="s3", PolicyDocument=policy)
        boto3.client("s3", **setup).create_bucket(Bucket="platform")  # the 4th and last free action

        folder = tmp_path / "project"
        folder.mkdir()
        (folder / "credentials_direct.py").write_text(DIRECT)
        compiled = compile_pipeline(load_pipeline(f"{folder / 'credentials_direct.py'}:around"))
        server = start_server(
            tmp_path / "server",
            {
                "ARGOSY_INSECURE_DEV": "true",
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                "AWS_DEFAULT_REGION": TEST_REGION,
                "ARGOSY_ARTIFACT_URL": "s3://platform/argosy",
                "ARGOSY_S3_ENDPOINT_URL": endpoint.url,
                "ARGOSY_S3_PATH_STYLE": "true",
                "ARGOSY_S3_INSECURE": "true",
            },
        )  # fmt: skip
        try:
            with Client(server.url) as client:
                client.push_pipeline(compiled)
                params = {"endpoint": endpoint.url, "bucket": "platform"}
                run = client.wait(
                    client.create_run("around", parameters=params).id, poll=0.2, timeout=120
                )
                assert run.status == "succeeded", run.error
                seen = {a.node_path: a.value for a in client.artifacts(run.id)}["go_around"]
        finally:
            server.stop()
    finally:
        endpoint.stop()
    assert seen["value"] == "payload"  # the server (with its credentials) stored and served it
    assert seen["signed"] == "no credentials"
    # the object exists: each way around the server is a 403 refusal, not a "not found", and
    # no bytes come back
    assert seen["unsigned_get"][0] == 403, seen
    assert seen["forged_get"] == [403, "InvalidAccessKeyId"], seen
    assert seen["raw_get"][0] == 403 and "payload" not in seen["raw_get"][1], seen


LOCAL_FILE = textwrap.dedent(
    """
    from pathlib import Path
    from argosy import pipeline, step

    @step
    def size(data: Path) -> int:
        return data.stat().st_size

    @pipeline
    def reads_a_file(source: str = "data.csv"):
        size(source)
    """
)


def test_a_server_run_cannot_import_files_from_the_servers_disk(tmp_path: Path) -> None:
    """Locally a Path input given as a string imports the user's file; on a server that would
    read the server's own files (its key file, its database): refused, with the reason."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "credentials_local_file.py").write_text(LOCAL_FILE)
    compiled = compile_pipeline(
        load_pipeline(f"{folder / 'credentials_local_file.py'}:reads_a_file")
    )
    server = start_server(tmp_path / "server", {"ARGOSY_INSECURE_DEV": "true"})
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            secret = str(tmp_path / "server" / "keys" / "kek")
            run = client.wait(
                client.create_run("reads_a_file", parameters={"source": secret}).id,
                poll=0.2, timeout=60,
            )  # fmt: skip
            task = client.tasks(run.id)[0]
            artifacts = client.artifacts(run.id)
    finally:
        server.stop()
    assert run.status == "failed"
    assert "a server does not read files from its own disk" in (task.reason or "")
    assert artifacts == [] and task.attempts == []  # nothing was imported, nothing ran
