"""The KFP v2beta1 API surface, driven by the real ``kfp.Client`` against a live server.

``kfp`` pins old kubernetes/urllib3/requests/protobuf, so it never enters Argosy's environment:
the test makes its own virtualenv (cached under ~/.cache/argosy-tests, keyed by the kfp
version) and runs the client there as a script, whose JSON report is checked here. The
server authenticates tokens of the test OIDC issuer; the tenant is the KFP namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from argosy.api import API_PREFIX
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerProcess, oidc_env, start_server

KFP_VERSION = "2.15.2"
CORPUS = Path(__file__).resolve().parent / "kfp" / "pipelines"
TENANT = "kfp-team"
ADMIN = {"sub": "root-admin", "groups": ["platform-admins"]}
EDITOR = {"sub": "ed", "groups": ["kfp-editors"]}
VIEWER = {"sub": "vic", "groups": ["kfp-viewers"]}
OUTSIDER = {"sub": "out", "groups": []}


@pytest.fixture(scope="session")
def kfp_python() -> str:
    """The python of a virtualenv with kfp installed (made once, then reused)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "argosy-tests"
    folder = root / f"kfp-{KFP_VERSION}-py{sys.version_info.major}{sys.version_info.minor}"
    python = folder / "bin" / "python"
    check = [str(python), "-c", "import kfp, sys; sys.exit(kfp.__version__ != sys.argv[1])",
             KFP_VERSION]  # fmt: skip
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return str(python)
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"kfp=={KFP_VERSION}"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    subprocess.run(check, check=True)
    return str(python)


@pytest.fixture(scope="module")
def server(
    oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    started = start_server(tmp_path_factory.mktemp("kfp-server"), oidc_env(oidc_issuer.issuer))
    admin = {"Authorization": f"Bearer {oidc_issuer.token(**ADMIN)}"}  # type: ignore[arg-type]
    base = f"{started.url}{API_PREFIX}/tenants"
    assert httpx.post(base, json={"name": TENANT}, headers=admin).status_code == 201
    for role, group in (("editor", "kfp-editors"), ("viewer", "kfp-viewers")):
        answer = httpx.post(f"{base}/{TENANT}/members", headers=admin,
                            json={"role": role, "subject_kind": "group", "subject": group})  # fmt: skip
        assert answer.status_code == 201, answer.text
    yield started
    started.stop(timeout=20)


CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import kfp
    from kfp_server_api.exceptions import ApiException

    host, editor, viewer, outsider, corpus = sys.argv[1:6]
    report = {}

    def refused(call):
        try:
            call()
        except ApiException as exc:
            return exc.status
        return None

    c = kfp.Client(host=host, existing_token=editor)
    report["healthz"] = c.get_kfp_healthz().to_dict()
    p = c.upload_pipeline(f"{corpus}/add_numbers.yaml", pipeline_name="add-numbers-ci")
    report["pipeline"] = p.to_dict()
    v = c.upload_pipeline_version(f"{corpus}/add_numbers.yaml", "v2", pipeline_id=p.pipeline_id)
    report["version"] = v.to_dict()
    report["pipeline_id_by_name"] = c.get_pipeline_id("add-numbers-ci")
    report["pipelines"] = [x.display_name for x in c.list_pipelines().pipelines or []]
    report["versions"] = [x.pipeline_version_id for x in
                          c.list_pipeline_versions(p.pipeline_id).pipelines_versions or []] \\
        if hasattr(c.list_pipeline_versions(p.pipeline_id), "pipelines_versions") else \\
        [x.pipeline_version_id for x in c.list_pipeline_versions(p.pipeline_id).pipeline_versions or []]
    report["get_version"] = c.get_pipeline_version(p.pipeline_id, v.pipeline_version_id).pipeline_version_id
    e = c.create_experiment("ci")
    report["experiment"] = e.to_dict()
    run = c.run_pipeline(e.experiment_id, "ci run", params={"a": 5, "b": 7},
                         pipeline_id=p.pipeline_id, version_id=v.pipeline_version_id)
    done = c.wait_for_run_completion(run.run_id, timeout=120, sleep_duration=1)
    report["run"] = {"state": done.state, "parameters": done.runtime_config.parameters,
                     "run_id": done.run_id}
    package = c.create_run_from_pipeline_package(f"{corpus}/concat_message.yaml",
        arguments={"message1": "Hello ", "message2": "KFP"}, experiment_name="ci")
    report["package_run"] = c.wait_for_run_completion(package.run_id, timeout=120,
                                                      sleep_duration=1).state
    report["runs"] = sorted(r.run_id for r in c.list_runs(page_size=50).runs or [])
    r = c.create_recurring_run(e.experiment_id, "nightly", cron_expression="0 0 3 * * *",
        params={"a": 1, "b": 2}, pipeline_id=p.pipeline_id, version_id=v.pipeline_version_id,
        enabled=False)
    report["recurring"] = r.to_dict()
    report["recurring_list"] = [x.recurring_run_id for x in
                                c.list_recurring_runs().recurring_runs or []]
    c.enable_recurring_run(r.recurring_run_id)
    report["recurring_enabled"] = c.get_recurring_run(r.recurring_run_id).status
    c.delete_recurring_run(r.recurring_run_id)
    long = c.run_pipeline(e.experiment_id, "to terminate", pipeline_id=p.pipeline_id,
                          version_id=v.pipeline_version_id, params={"a": 1, "b": 1})
    c.terminate_run(long.run_id)
    # (kfp's wait_for_run_completion does not count CANCELED as finished: poll get_run)
    import time
    for _ in range(120):
        report["terminated"] = c.get_run(long.run_id).state
        if report["terminated"] in ("CANCELED", "SUCCEEDED", "FAILED"):
            break
        time.sleep(0.5)

    viewer_client = kfp.Client(host=host, existing_token=viewer)
    report["viewer_reads"] = viewer_client.get_run(run.run_id).state
    report["viewer_create"] = refused(lambda: viewer_client.run_pipeline(
        e.experiment_id, "nope", pipeline_id=p.pipeline_id, version_id=v.pipeline_version_id,
        params={"a": 1, "b": 1}))
    report["viewer_upload"] = refused(lambda: viewer_client.upload_pipeline(
        f"{corpus}/concat_message.yaml", pipeline_name="viewer-pipeline"))
    report["outsider_read"] = refused(lambda: kfp.Client(host=host, existing_token=outsider)
                                      .get_run(run.run_id))
    report["wrong_namespace"] = refused(lambda: c.list_runs(namespace="someone-else"))
    print(json.dumps(report, default=str))
    """
)


def test_kfp_client_uploads_runs_waits_and_viewers_are_refused(
    server: ServerProcess, oidc_issuer: OidcIssuer, kfp_python: str, tmp_path: Path
) -> None:
    tokens = [oidc_issuer.token(**who) for who in (EDITOR, VIEWER, OUTSIDER)]  # type: ignore[arg-type]
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    host = f"{server.url}{API_PREFIX}/tenants/{TENANT}/kfp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGOSY_", "PYTHON"))}
    proc = subprocess.run(
        [kfp_python, str(script), host, *tokens, str(CORPUS)],
        capture_output=True, text=True, timeout=300, env={**env, "HOME": str(tmp_path)},
    )  # fmt: skip
    # what the server did, without the client's polls
    said = [line for line in server.log().splitlines() if '"method": "GET"' not in line]
    assert proc.returncode == 0, proc.stderr[-4000:] + "\n".join(said)[-6000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["healthz"]["multi_user"] is False
    assert report["pipeline"]["pipeline_id"] == "add-numbers-ci"
    assert report["pipeline"]["namespace"] == TENANT
    assert report["pipeline_id_by_name"] == "add-numbers-ci"
    assert "add-numbers-ci" in report["pipelines"]
    assert report["version"]["pipeline_version_id"] in report["versions"]
    assert report["get_version"] == report["version"]["pipeline_version_id"]
    assert report["experiment"]["display_name"] == "ci"
    assert report["run"]["state"] == "SUCCEEDED"
    assert report["run"]["parameters"] == {"a": 5, "b": 7}
    assert report["package_run"] == "SUCCEEDED"
    assert report["run"]["run_id"] in report["runs"]
    assert report["recurring"]["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert report["recurring"]["mode"] == "DISABLE"
    assert report["recurring"]["recurring_run_id"] in report["recurring_list"]
    assert report["recurring_enabled"] == "ENABLED"
    assert report["terminated"] in ("CANCELED", "SUCCEEDED")  # a 1 s run may beat the cancel
    assert report["viewer_reads"] == "SUCCEEDED"
    assert report["viewer_create"] == 403
    assert report["viewer_upload"] == 403
    assert report["outsider_read"] == 403
    assert report["wrong_namespace"] == 422  # a namespace other than the tenant of the URL
    # the run is an ordinary Argosy run of the imported pipeline, read through the native API
    editor = {"Authorization": f"Bearer {tokens[0]}"}
    native = httpx.get(
        f"{server.url}{API_PREFIX}/tenants/{TENANT}/runs/{report['run']['run_id']}", headers=editor
    ).json()
    assert native["outputs"]["Output"]["value"] == 12
