"""The registry of backends (argosy.plugins): every entry resolves, and lookups use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from argosy import plugins
from argosy.errors import StoreError
from argosy.executors.base import Executor
from argosy.stores.artifacts.base import ByteStore
from argosy.stores.artifacts.blobs import open_artifact_store
from argosy.stores.artifacts.local import LocalByteStore

ENTRIES = [(group, name) for group in plugins.GROUPS for name in plugins.names(group)]
INTERFACES = {plugins.EXECUTORS: Executor, plugins.BYTE_STORES: ByteStore}


def test_argosys_own_backends_are_registered() -> None:
    assert set(plugins.names(plugins.EXECUTORS)) >= {"local"}
    assert set(plugins.names(plugins.BYTE_STORES)) >= {
        "file", "s3", "argosy-task+http", "argosy-task+https",
    }  # fmt: skip


@pytest.mark.parametrize(("group", "name"), ENTRIES, ids=[f"{g}:{n}" for g, n in ENTRIES])
def test_every_registry_entry_resolves_to_its_interface(group: str, name: str) -> None:
    found = plugins.load(group, name, what=group)
    assert isinstance(found, type) and issubclass(found, INTERFACES[group])


def test_an_unknown_executor_names_the_known_ones() -> None:
    with pytest.raises(
        plugins.UnknownBackendError, match=r"executor 'nomad' .* known: kubernetes, local"
    ):
        plugins.executor_class("nomad")


def test_a_store_url_picks_its_byte_store_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_artifact_store(str(tmp_path), "team-a").backend, LocalByteStore)
    by_url = open_artifact_store(f"file://{tmp_path}", "team-a").backend
    assert isinstance(by_url, LocalByteStore) and by_url.root == tmp_path
    with pytest.raises(StoreError, match=r"scheme 'ftp' is not supported; .*file://, .*s3://"):
        open_artifact_store("ftp://host/x", "team-a")


def test_argosys_own_backend_is_found_without_reading_every_package() -> None:
    plugins.names.cache_clear()
    assert (
        plugins.own_names(plugins.EXECUTORS)["local"] == plugins.names(plugins.EXECUTORS)["local"]
    )
    plugins.names.cache_clear()
    plugins.executor_class("local")
    assert plugins.names.cache_info().currsize == 0  # the scan of every package was not needed
