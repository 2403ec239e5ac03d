"""Every document the Kubernetes executor and ``argosy admin tenant-namespace`` produce validates
against the official Kubernetes OpenAPI schemas (``kubernetes-validate``, pinned version), and
carries what the issue asks of it: pinned image, resources, pools, security, labels, secrets
as files."""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes_validate
import pytest

from argosy.errors import UsageError
from argosy.executors.kubernetes import manifests
from argosy.executors.kubernetes.manifests import JobOptions, NamespaceOptions, Pool
from tests.kubernetes_fake import KUBERNETES_VERSION

IMAGE = "registry.example.com/argosy-runtime@sha256:" + "ab" * 32
GPU_POOL = Pool.parse(
    "gpu-a10g",
    {
        "node_selector": {"node.kubernetes.io/instance-type": "g5.xlarge"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "karpenter.sh/capacity-type",
                                    "operator": "In",
                                    "values": ["on-demand"],
                                }
                            ]
                        }
                    ]
                }
            }
        },
    },
)


def valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def invocation(node: str = "train") -> dict[str, Any]:
    return {
        "version": 1,
        "tenant": "team-a",
        "run_id": "01J0RUN",
        "node_path": node,
        "attempt": 2,
        "attempt_id": "01J0ATTEMPTABC",
        "store": {
            "url": "argosy-task+http://argosy:8080",
            "options": {"token": "argosy-task.secret-token"},
        },
        "cache_dir": "/scratch/cache",
        "scratch": "/scratch/work",
        "step": {"name": "train", "implementation": {"kind": "python"}},
        "code": None,
        "inputs": {},
        "result_key": "runs/01J0RUN/train/2/result.json",
    }


def job(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        tenant="team-a",
        attempt_id="01J0ATTEMPTABC",
        invocation=invocation(),
        cpu=2.5,
        memory=3 * 2**30,
        gpu=1,
        timeout=600.0,
        env={"MODE": "full"},
        secret_names=["DB_PASSWORD"],
        log_key="runs/01J0RUN/train/2/log.jsonl",
        options=JobOptions(namespace="argosy-team-a", image=IMAGE, pool=GPU_POOL),
        pipeline="breast-cancer",
    )
    args.update(changes)
    return manifests.attempt_job(**args)


def test_attempt_job_validates_and_carries_the_attempt() -> None:
    doc = job()
    valid(doc)
    spec = doc["spec"]
    assert spec["backoffLimit"] == 0  # retries are the engine's
    assert spec["activeDeadlineSeconds"] == 600 + manifests.STOP_GRACE_SECONDS
    assert spec["ttlSecondsAfterFinished"] == 3600
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"] == {
        "requests": {"cpu": "2500m", "memory": "3072Mi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "3840Mi", "nvidia.com/gpu": "1"},
    }
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["serviceAccountName"] == "argosy-task"
    assert pod["automountServiceAccountToken"] is False
    labels = doc["metadata"]["labels"]
    assert labels["argosy.dev/tenant"] == "team-a"
    assert labels["argosy.dev/run"] == "01J0RUN"
    assert labels["argosy.dev/task"] == "train"
    assert labels["argosy.dev/attempt"] == "01J0ATTEMPTABC"
    assert labels["argosy.dev/attempt-number"] == "2"
    assert labels["argosy.dev/pipeline"] == "breast-cancer"
    assert labels["argosy.dev/pool"] == "gpu-a10g"
    assert spec["template"]["metadata"]["labels"] == labels  # cost tools read pod labels
    assert doc["metadata"]["annotations"]["argosy.dev/node-path"] == "train"


def test_security_context_is_strict() -> None:
    pod = job()["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[manifests.SCRATCH]["name"] == "scratch"  # the only writable place
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]
    assert all(m.get("readOnly") for p, m in mounts.items() if p != manifests.SCRATCH)


STEP_IMAGE = "registry.example.com/ml/xgb@sha256:" + "cd" * 32


def test_a_step_in_its_own_image_gets_an_init_container_that_copies_the_runtime() -> None:
    """The Job of ``@step(image=...)``: the init container runs the runtime image and copies
    the runtime into an emptyDir; the step's container runs the step's image with that copy
    mounted read-only, its python3 on the boot script; both as strictly confined as ever,
    the GPU and the pool with the step; the pod asks for what the step asks (an init
    container's request counts only if it is the larger). Validates against 1.33."""
    doc = job(step_image=STEP_IMAGE)
    valid(doc)
    pod = doc["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    [main] = pod["containers"]
    assert init["name"] == manifests.INIT_CONTAINER and init["image"] == IMAGE
    assert init["command"] == ["python", "-m", "argosy.executors.kubernetes.bundle"]
    assert init["args"] == [manifests.RUNTIME_DIR]
    assert init["volumeMounts"] == [{"name": "runtime", "mountPath": manifests.RUNTIME_DIR}]
    assert main["image"] == STEP_IMAGE
    assert main["command"] == ["python3", f"{manifests.RUNTIME_DIR}/boot.py"]
    assert main["args"] == [STEP_IMAGE, f"{manifests.ATTEMPT_DIR}/{manifests.INVOCATION}"]
    assert {"name": "runtime", "mountPath": manifests.RUNTIME_DIR, "readOnly": True} in main[
        "volumeMounts"
    ]
    assert {"name": "runtime", "emptyDir": {}} in pod["volumes"]
    for container in (init, main):
        assert container["securityContext"] == manifests.container_security()
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert main["resources"] == job()["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" in main["resources"]["limits"]
    assert init["resources"] == {
        "requests": {"cpu": "2500m", "memory": "3072Mi"},
        "limits": {"memory": "3840Mi"},
    }  # the step's CPU and memory, no GPU
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert pod["securityContext"] == manifests.pod_security()
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert all(m.get("readOnly") for p, m in mounts.items() if p != manifests.SCRATCH)
    # everything else is the same Job as a step in the runtime image
    plain = job()
    assert {
        k: v for k, v in pod.items() if k not in ("initContainers", "containers", "volumes")
    } == {
        k: v
        for k, v in plain["spec"]["template"]["spec"].items()
        if k not in ("containers", "volumes")
    }
    assert main["env"] == plain["spec"]["template"]["spec"]["containers"][0]["env"]


def test_secrets_are_files_never_environment_variables() -> None:
    doc = job()
    container = doc["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]}
    assert "DB_PASSWORD" not in names and all("valueFrom" not in e for e in container["env"])
    assert {"name": "MODE", "value": "full"} in container["env"]
    secret_volume = next(
        v for v in doc["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"
    )
    assert secret_volume["secret"]["items"] == [
        {"key": "secret.DB_PASSWORD", "path": "DB_PASSWORD"}
    ]
    secret = manifests.attempt_secret(
        "argosy-01j0attemptabc",
        "argosy-team-a",
        doc["metadata"]["labels"],
        invocation(),
        {"DB_PASSWORD": "hunter2"},
    )
    valid(secret)
    assert secret["immutable"] is True
    assert base64.b64decode(secret["data"]["secret.DB_PASSWORD"]) == b"hunter2"
    inv = json.loads(base64.b64decode(secret["data"]["invocation.json"]))
    assert inv["store"]["options"]["token"] == "argosy-task.secret-token"  # only in the Secret
    assert "argosy-task.secret-token" not in json.dumps(doc)
    with pytest.raises(UsageError, match="file name"):
        manifests.attempt_secret("x", "ns", {}, invocation(), {"bad/name": "v"})


def test_names_and_label_values_are_made_valid() -> None:
    doc = job(
        invocation=invocation("prep/clean-" + "x" * 80 + "[3]"),
        gpu=0,
        memory=None,
        options=JobOptions(namespace="argosy-team-a", image=IMAGE),
    )
    valid(doc)
    task = doc["metadata"]["labels"]["argosy.dev/task"]
    assert len(task) <= 63 and task.startswith("prep-clean-")
    assert doc["metadata"]["annotations"]["argosy.dev/node-path"].endswith("[3]")
    assert "nodeSelector" not in doc["spec"]["template"]["spec"]
    assert doc["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "2500m"}
    }
    assert manifests.label_value("fold[3]") == "fold-3"
    assert manifests.label_value("a" * 70) != manifests.label_value("a" * 71)


def test_image_must_be_pinned_by_digest() -> None:
    with pytest.raises(UsageError, match="pinned by digest"):
        manifests.check_pinned("registry.example.com/argosy-runtime:latest")
    assert manifests.check_pinned(IMAGE) == IMAGE


def test_pool_map_refuses_unknown_keys() -> None:
    with pytest.raises(UsageError, match="unknown keys"):
        Pool.parse("cpu", {"nodeSelector": {}})


@pytest.mark.parametrize(
    "quota",
    [None, {"running_tasks": 20, "cpu": 64, "memory": 256 * 2**30, "gpu": 4}, {"gpu": 0}],
)
def test_tenant_namespace_validates(quota: dict[str, Any] | None) -> None:
    docs = manifests.tenant_namespace(
        "team-a",
        quota,
        NamespaceOptions(
            "argosy-team-a", role_arn="arn:aws:iam::123456789012:role/argosy-{tenant}"
        ),
    )
    for doc in docs:
        valid(doc)
    kinds = [d["kind"] for d in docs]
    assert kinds[:3] == ["Namespace", "ServiceAccount", "RoleBinding"]
    assert {"LimitRange", "NetworkPolicy"} <= set(kinds)
    sa = docs[1]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("/argosy-team-a")
    quotas = [d for d in docs if d["kind"] == "ResourceQuota"]
    if quota is None:
        assert not quotas
    elif quota.get("cpu"):
        assert quotas[0]["spec"]["hard"] == {
            "pods": "20",
            "requests.cpu": "64000m",
            "requests.memory": "262144Mi",
            "requests.nvidia.com/gpu": "4",
        }
    else:
        assert quotas[0]["spec"]["hard"] == {"requests.nvidia.com/gpu": "0"}
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    egress = policy["spec"]["egress"]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": 8080}]  # the task store
    assert "169.254.0.0/16" in egress[2]["to"][0]["ipBlock"]["except"]  # no instance metadata
    assert policy["spec"]["ingress"] == []


def test_namespace_template_is_checked() -> None:
    assert manifests.namespace_for("argosy-{tenant}", "team-a") == "argosy-team-a"
    with pytest.raises(UsageError, match="DNS-1123"):
        manifests.namespace_for("Argosy_{tenant}", "team-a")
