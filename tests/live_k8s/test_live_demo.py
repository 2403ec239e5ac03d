"""The demo pipeline on a real cluster, through an Argosy server that runs its tasks as pods.

Needs: ``KUBECONFIG`` (to check the tenant's namespace afterwards), ``ARGOSY_SERVER`` and
``ARGOSY_TOKEN`` (an editor of ``ARGOSY_TENANT``'s), a server deployed with
``ARGOSY_EXECUTOR=kubernetes`` (deploy/kustomize) and the tenant's namespace applied
(``argosy admin tenant-namespace TENANT --apply``)::

    KUBECONFIG=~/.kube/config ARGOSY_SERVER=https://argosy.example.com ARGOSY_TOKEN=... \\
    ARGOSY_TENANT=team-a .venv/bin/python -m pytest -m live_k8s tests/live_k8s -v
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from argosy.executors.kubernetes.client import KubernetesClient
from argosy.executors.kubernetes.manifests import SELECTOR

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.live_k8s


def argosy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "argosy"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        cwd=ROOT,
    )


def test_demo_runs_as_pods_and_leaves_nothing_behind() -> None:
    for name in ("ARGOSY_SERVER", "ARGOSY_TOKEN", "ARGOSY_TENANT"):
        if not os.environ.get(name):
            pytest.skip(f"{name} is not set")
    tenant = os.environ["ARGOSY_TENANT"]
    namespace = os.environ.get("ARGOSY_KUBERNETES_NAMESPACE", "argosy-{tenant}").format(
        tenant=tenant
    )
    done = argosy("run", "examples/demo.py:breast_cancer", "--output", "json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "succeeded", run
    client = KubernetesClient.connect()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs, _ = client.list("Job", namespace, f"{SELECTOR},argosy.dev/run={run['id']}")
            secrets, _ = client.list("Secret", namespace, f"{SELECTOR},argosy.dev/run={run['id']}")
            if not jobs and not secrets:
                break
            time.sleep(2)
        assert not jobs and not secrets, "Jobs or Secrets of the run were left behind"
    finally:
        client.close()
