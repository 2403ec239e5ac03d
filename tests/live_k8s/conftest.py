"""Tests on a real Kubernetes cluster: run only with ``-m live_k8s`` and ``KUBECONFIG`` set
(``make test`` skips them). See docs/deploy-kubernetes.md, "Checking an install"."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = "live_k8s" in (config.getoption("-m") or "")
    for item in items:
        if "live_k8s" not in item.keywords:
            continue
        if not selected:
            item.add_marker(pytest.mark.skip(reason="a live cluster test: run with -m live_k8s"))
        elif not os.environ.get("KUBECONFIG"):
            item.add_marker(pytest.mark.skip(reason="KUBECONFIG is not set"))
