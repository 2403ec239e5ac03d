"""What the Kubernetes executor creates, as plain documents (dicts), with no API calls.

- :func:`attempt_job` and :func:`attempt_secret`: one ``batch/v1`` Job and one Secret per
  attempt, in the tenant's namespace; a Python step in an image of its own
  (``@step(image=...)``) gets an init container that copies the Argosy runtime into the pod
  (``bundle.py``) and runs in its image with that copy mounted read-only;
- :func:`tenant_namespace`: what a tenant's namespace holds (Namespace, ServiceAccount,
  RoleBinding, ResourceQuota, LimitRange, NetworkPolicy), rendered by
  ``argosy admin tenant-namespace`` from the tenant's Argosy quota.

Every document validates against the official Kubernetes OpenAPI schemas (the tests check
them with ``kubernetes-validate``). Names and label values follow DNS-1123 / label rules;
the exact node path and other free-form values go into annotations.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from argosy.errors import UsageError

GROUP = "argosy.dev"
MANAGED_BY = {"app.kubernetes.io/managed-by": "argosy"}
TASK_COMPONENT = {"app.kubernetes.io/component": "task"}
SELECTOR = "app.kubernetes.io/managed-by=argosy,app.kubernetes.io/component=task"
ATTEMPT_LABEL = f"{GROUP}/attempt"

CONTAINER = "step"
INIT_CONTAINER = "argosy-runtime"  # copies the runtime for a step in an image of its own
RUNTIME_DIR = "/opt/argosy"  # emptyDir: that copy (read-only in the step's container)
SCRATCH = "/scratch"  # emptyDir: the only writable place (the root filesystem is read-only)
ATTEMPT_DIR = "/var/run/argosy/attempt"  # the invocation (task token, data keys), read-only
SECRETS_DIR = "/var/run/argosy/secrets"  # the step's declared secrets, one file each
INVOCATION = "invocation.json"
TASK_UID = 10001
GPU_RESOURCE = "nvidia.com/gpu"
STOP_GRACE_SECONDS = 30  # terminationGracePeriodSeconds: SIGTERM, then SIGKILL

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def label_value(text: str) -> str:
    """``text`` as a valid label value: other characters become ``-``; long values keep a
    hash suffix so that two long values stay different."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    if len(value) > 63:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        value = value[:54].rstrip("-_.") + "-" + digest
    return value


def job_name(attempt_id: str) -> str:
    """The Job (and Secret) of an attempt: ``argosy-<attempt id>`` (a DNS-1123 label)."""
    return f"argosy-{attempt_id.lower()}"


def namespace_for(template: str, tenant: str) -> str:
    name = template.format(tenant=tenant)
    if not _DNS_LABEL.match(name) or len(name) > 63:
        raise UsageError(
            f"the namespace {name!r} (ARGOSY_KUBERNETES_NAMESPACE={template!r}) is not a "
            "DNS-1123 label; use lowercase letters, digits and '-', e.g. 'argosy-{tenant}'"
        )
    return name


@dataclass(frozen=True)
class Pool:
    """Where a step's pods may run: a node selector, tolerations and an affinity."""

    name: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] | None = None

    @classmethod
    def parse(cls, name: str, doc: Mapping[str, Any]) -> Pool:
        unknown = set(doc) - {"node_selector", "tolerations", "affinity"}
        if unknown:
            raise UsageError(
                f"node pool {name!r} (ARGOSY_KUBERNETES_POOLS) has unknown keys "
                f"{sorted(unknown)}; use node_selector, tolerations and affinity"
            )
        return cls(
            name,
            {str(k): str(v) for k, v in (doc.get("node_selector") or {}).items()},
            list(doc.get("tolerations") or []),
            doc.get("affinity"),
        )


def parse_pools(docs: Mapping[str, Mapping[str, Any]]) -> dict[str, Pool]:
    """The deployment's pool map, e.g. ``{"cpu": {"node_selector": {"karpenter.sh/nodepool":
    "cpu"}}, "gpu-a10g": {"node_selector": {...}, "tolerations": [...]}}``."""
    return {name: Pool.parse(name, doc) for name, doc in docs.items()}


@dataclass(frozen=True)
class JobOptions:
    """Deployment-level settings of every attempt's Job."""

    namespace: str
    image: str
    service_account: str = "argosy-task"
    ttl_seconds: int = 3600
    memory_margin: float = 1.25  # the memory limit is the request x this (as locally)
    pool: Pool | None = None


def check_pinned(image: str) -> str:
    """An image reference pinned by digest (``REPO@sha256:<64 hex>``), or a UsageError."""
    if not re.search(r"@sha256:[0-9a-f]{64}$", image):
        raise UsageError(
            f"the image {image!r} is not pinned by digest: use REPO@sha256:<digest> (CI "
            "records the digest it pushed), so every attempt runs the same bytes"
        )
    return image


def _labels(
    tenant: str, pipeline: str, invocation: Mapping[str, Any], pool: str | None
) -> dict[str, str]:
    step = invocation.get("step") or {}
    labels = {
        **MANAGED_BY,
        **TASK_COMPONENT,
        f"{GROUP}/tenant": label_value(tenant),
        f"{GROUP}/run": label_value(str(invocation["run_id"])),
        f"{GROUP}/task": label_value(str(invocation["node_path"])),
        f"{GROUP}/step": label_value(str(step.get("name", ""))),
        ATTEMPT_LABEL: label_value(str(invocation["attempt_id"])),
        f"{GROUP}/attempt-number": str(invocation["attempt"]),
    }
    if pipeline:
        labels[f"{GROUP}/pipeline"] = label_value(pipeline)
    if pool:
        labels[f"{GROUP}/pool"] = label_value(pool)
    return {k: v for k, v in labels.items() if v}


def _quantity_memory(n: int) -> str:
    return f"{math.ceil(n / 2**20)}Mi"


def _quantity_cpu(cpu: float) -> str:
    return f"{math.ceil(cpu * 1000)}m"


def resources(cpu: float, memory: int | None, gpu: int, margin: float) -> dict[str, Any]:
    """Requests from the step; the memory limit is the request x margin (the OOM line, as the
    local executor's watchdog); no CPU limit (no throttling); GPUs as ``nvidia.com/gpu``."""
    requests: dict[str, str] = {"cpu": _quantity_cpu(cpu)}
    limits: dict[str, str] = {}
    if memory:
        requests["memory"] = _quantity_memory(memory)
        limits["memory"] = _quantity_memory(int(memory * margin))
    if gpu:
        limits[GPU_RESOURCE] = str(gpu)
        requests[GPU_RESOURCE] = str(gpu)
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def container_security() -> dict[str, Any]:
    """Non-root, no privilege escalation, read-only root, all capabilities dropped."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TASK_UID,
        "runAsGroup": TASK_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": TASK_UID,
        "runAsGroup": TASK_UID,
        "fsGroup": TASK_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def attempt_secret(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    invocation: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> dict[str, Any]:
    """The per-attempt Secret: the invocation document (task token, data keys; its scratch
    and cache folders inside the pod's emptyDir) and the declared
    secrets, each a file; never environment variables. Immutable; deleted with the attempt."""
    data = {INVOCATION: _b64(json.dumps(dict(invocation)))}
    for key, value in secrets.items():
        if not _SECRET_KEY.match(key) or key == INVOCATION:
            raise UsageError(
                f"the secret name {key!r} cannot be a file name in a Kubernetes Secret; "
                "use letters, digits, '-', '_' and '.'"
            )
        data[f"secret.{key}"] = _b64(value)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "type": "Opaque",
        "immutable": True,
        "data": data,
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def attempt_job(
    *,
    tenant: str,
    attempt_id: str,
    invocation: Mapping[str, Any],
    cpu: float,
    memory: int | None,
    gpu: int,
    timeout: float | None,
    env: Mapping[str, str],
    secret_names: list[str],
    log_key: str,
    options: JobOptions,
    pipeline: str = "",
    step_image: str | None = None,
) -> dict[str, Any]:
    """The attempt's Job: one pod, no retries of its own (the engine retries), a deadline
    from the step's timeout, garbage-collected ``ttl_seconds`` after it finished.

    With ``step_image`` (a Python step in an image of its own) the pod's init container runs
    the runtime image and copies the Argosy runtime into an emptyDir; the step's container
    runs ``step_image`` with it mounted read-only and the image's ``python3`` on the copy's
    boot script (``bundle.py``), which checks that Python before the launcher runs. Both
    containers get the same security context; the init container the step's CPU and memory
    but no GPU (a pod's request is the larger of its init containers' and its containers'
    sum, so the pod still asks for exactly what the step asks)."""
    name = job_name(attempt_id)
    pool = options.pool
    labels = _labels(tenant, pipeline, invocation, pool.name if pool else None)
    annotations = {
        f"{GROUP}/node-path": str(invocation["node_path"]),
        f"{GROUP}/log-key": log_key,
        f"{GROUP}/timeout": "" if timeout is None else repr(float(timeout)),
    }
    threads = str(max(1, math.ceil(cpu)))
    variables = {
        **env,
        "HOME": SCRATCH,
        "TMPDIR": SCRATCH,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "ARGOSY_SECRETS_DIR": SECRETS_DIR,
        "ARGOSY_ATTEMPT_ID": attempt_id,
        "ARGOSY_RUN_ID": str(invocation["run_id"]),
        "ARGOSY_NODE_PATH": str(invocation["node_path"]),
        "ARGOSY_ATTEMPT": str(invocation["attempt"]),
    }
    mounts = [
        {"name": "scratch", "mountPath": SCRATCH},
        {"name": "attempt", "mountPath": ATTEMPT_DIR, "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "scratch", "emptyDir": {}},
        {
            "name": "attempt",
            "secret": {
                "secretName": name,
                "defaultMode": 0o440,  # root:fsGroup, readable by the task's group only
                "items": [{"key": INVOCATION, "path": INVOCATION}],
            },
        },
    ]
    if secret_names:
        mounts.append({"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "secrets",
                "secret": {
                    "secretName": name,
                    "defaultMode": 0o440,
                    "items": [{"key": f"secret.{s}", "path": s} for s in secret_names],
                },
            }
        )
    container_resources = resources(cpu, memory, gpu, options.memory_margin)
    command = ["python", "-m", "argosy.runtime.launcher"]
    args = [f"{ATTEMPT_DIR}/{INVOCATION}"]
    init_containers: list[dict[str, Any]] = []
    if step_image is not None:
        volumes.append({"name": "runtime", "emptyDir": {}})
        mounts.append({"name": "runtime", "mountPath": RUNTIME_DIR, "readOnly": True})
        command = ["python3", f"{RUNTIME_DIR}/boot.py"]
        args = [step_image, f"{ATTEMPT_DIR}/{INVOCATION}"]
        init_containers.append(
            {
                "name": INIT_CONTAINER,
                "image": options.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-m", "argosy.executors.kubernetes.bundle"],
                "args": [RUNTIME_DIR],
                "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                "resources": resources(cpu, memory, 0, options.memory_margin),
                "securityContext": container_security(),
                "volumeMounts": [{"name": "runtime", "mountPath": RUNTIME_DIR}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": options.service_account,
        # the pod talks to Argosy's task store and the object store, never to the API server
        # (an IRSA web identity token is still projected by the EKS webhook)
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
        "securityContext": pod_security(),
        "containers": [
            {
                "name": CONTAINER,
                "image": step_image or options.image,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "args": args,
                "workingDir": SCRATCH,
                "env": [{"name": k, "value": v} for k, v in variables.items()],
                "resources": container_resources,
                "securityContext": container_security(),
                "volumeMounts": mounts,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if pool is not None:
        if pool.node_selector:
            pod_spec["nodeSelector"] = dict(pool.node_selector)
        if pool.tolerations:
            pod_spec["tolerations"] = list(pool.tolerations)
        if pool.affinity:
            pod_spec["affinity"] = pool.affinity
    spec: dict[str, Any] = {
        "backoffLimit": 0,  # retries stay with the engine (new attempts, new Jobs)
        "completions": 1,
        "parallelism": 1,
        "ttlSecondsAfterFinished": options.ttl_seconds,
        "podReplacementPolicy": "Failed",
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": pod_spec,
        },
    }
    if timeout is not None:  # the cluster's backstop; the executor ends it at the timeout
        spec["activeDeadlineSeconds"] = max(1, math.ceil(timeout)) + STOP_GRACE_SECONDS
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": options.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


# -- a tenant's namespace ----------------------------------------------------------------------
@dataclass(frozen=True)
class NamespaceOptions:
    namespace: str
    service_account: str = "argosy-task"
    role_arn: str | None = None  # IRSA
    server_namespace: str = "argosy-system"
    server_service_account: str = "argosy-server"
    server_port: int = 8080
    # where the object store is (S3's public ranges, or a VPC endpoint's); cluster-internal
    # ranges and the instance metadata service stay closed
    object_store_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    blocked_cidrs: tuple[str, ...] = (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
    )


def resource_quota(quota: Mapping[str, Any] | None) -> dict[str, str]:
    """A ResourceQuota's ``hard`` from an Argosy tenant quota (running_tasks, cpu, memory,
    gpu): ``null`` limits are left out."""
    quota = quota or {}
    hard: dict[str, str] = {}
    if quota.get("running_tasks") is not None:
        hard["pods"] = str(int(quota["running_tasks"]))
    if quota.get("cpu") is not None:
        hard["requests.cpu"] = _quantity_cpu(float(quota["cpu"]))
    if quota.get("memory") is not None:
        hard["requests.memory"] = _quantity_memory(int(quota["memory"]))
    if quota.get("gpu") is not None:
        hard[f"requests.{GPU_RESOURCE}"] = str(int(quota["gpu"]))
    return hard


def tenant_namespace(
    tenant: str, quota: Mapping[str, Any] | None, options: NamespaceOptions
) -> list[dict[str, Any]]:
    """The documents of a tenant's namespace, in the order to apply them."""
    ns = options.namespace
    labels = {**MANAGED_BY, f"{GROUP}/tenant": label_value(tenant)}
    sa_meta: dict[str, Any] = {"name": options.service_account, "namespace": ns, "labels": labels}
    if options.role_arn:
        sa_meta["annotations"] = {
            "eks.amazonaws.com/role-arn": options.role_arn.format(tenant=tenant)
        }
    task_pods = {"matchLabels": {**MANAGED_BY, **TASK_COMPONENT}}
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {
                    **labels,
                    # task pods meet the "restricted" Pod Security Standard
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": sa_meta,
            "automountServiceAccountToken": False,
        },
        {  # the server manages Jobs, Pods, Pod logs and Secrets here (ClusterRole in deploy/)
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "argosy-server", "namespace": ns, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "argosy-task-manager",
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": options.server_service_account,
                    "namespace": options.server_namespace,
                }
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "argosy-defaults", "namespace": ns, "labels": labels},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "defaultRequest": {"cpu": "1", "memory": "1Gi"},
                        "default": {"memory": "2Gi"},
                    }
                ]
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "argosy-task-egress", "namespace": ns, "labels": labels},
            "spec": {
                "podSelector": task_pods,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],  # nothing reaches a task pod
                "egress": [
                    {  # the server's task store
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {
                                        "kubernetes.io/metadata.name": options.server_namespace
                                    }
                                },
                                "podSelector": {
                                    "matchLabels": {"app.kubernetes.io/name": "argosy-server"}
                                },
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": options.server_port}],
                    },
                    {  # DNS
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                },
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                    {  # the object store (HTTPS), not the cluster's private ranges
                        "to": [
                            {"ipBlock": {"cidr": cidr, "except": list(options.blocked_cidrs)}}
                            if cidr == "0.0.0.0/0"
                            else {"ipBlock": {"cidr": cidr}}
                            for cidr in options.object_store_cidrs
                        ],
                        "ports": [{"protocol": "TCP", "port": 443}],
                    },
                ],
            },
        },
    ]
    hard = resource_quota(quota)
    if hard:
        docs.insert(
            3,
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "argosy-tenant-quota", "namespace": ns, "labels": labels},
                "spec": {"hard": hard},
            },
        )
    return docs
