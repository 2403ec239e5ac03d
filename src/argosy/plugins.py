"""The one registry of backends: executors and byte stores, found through entry points.

Each kind of backend is an entry-point group; an entry maps a name to the object that
implements it. Argosy's own backends are declared in its ``pyproject.toml`` exactly as a
third-party package declares its own, so nothing here names a backend::

    [project.entry-points."argosy.executors"]       name -> an Executor subclass
    local = "argosy.executors.local.executor:LocalExecutor"

    [project.entry-points."argosy.byte_stores"]     URL scheme -> a ByteStore subclass
    s3 = "argosy.stores.artifacts.s3:S3ByteStore"   (built by its ``from_url(url, options)``)

How to add a backend:

1. Implement the interface: :class:`argosy.executors.base.Executor` (in a folder of its own,
   like ``executors/local/``), or :class:`argosy.stores.artifacts.base.ByteStore` with a
   ``from_url`` classmethod.
2. Declare it under the group in your package's ``pyproject.toml`` and install the package
   (``pip install -e .`` again after editing Argosy's own: entry points are read from the
   installed metadata).
3. ``tests/test_plugins.py`` checks that every entry of both groups resolves.

Reading entry points costs ~10 ms (``importlib.metadata`` reads every installed package's),
so it is done once per process and only when a backend is asked for by name: a step's
launcher opening a local folder never pays it (see
:func:`argosy.stores.artifacts.blobs.open_artifact_store`). A name Argosy itself declares
(``local``, ``s3``, ...) is found in Argosy's own metadata alone (~1 ms), so ``argosy run``
does not read the others either; another package cannot replace one of Argosy's backends
under the same name (it declares its own name).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from argosy.errors import UsageError

if TYPE_CHECKING:
    from argosy.executors.base import Executor
    from argosy.stores.artifacts.base import ByteStore

EXECUTORS = "argosy.executors"
BYTE_STORES = "argosy.byte_stores"
GROUPS = (EXECUTORS, BYTE_STORES)
DEFAULT_EXECUTOR = "local"


class UnknownBackendError(UsageError):
    """No installed backend of a group has the name asked for."""


@functools.cache
def names(group: str) -> dict[str, str]:
    """The backends installed for ``group``: name -> ``module:object`` (read once)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=group)}


@functools.cache
def own_names(group: str) -> dict[str, str]:
    """Argosy's own backends of ``group``, from its own distribution's metadata only."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        found = distribution("argosy").entry_points
    except PackageNotFoundError:  # running from a source tree that is not installed
        return {}
    return {ep.name: ep.value for ep in found if ep.group == group}


def load(group: str, name: str, *, what: str) -> Any:
    """The object registered as ``name`` in ``group``; ``what`` names the kind in errors."""
    from importlib.metadata import EntryPoint

    target = own_names(group).get(name) or names(group).get(name)
    if target is None:
        known = ", ".join(sorted(names(group))) or "(none installed)"
        raise UnknownBackendError(
            f"{what} {name!r} is not installed; known: {known}. A backend is added by a "
            f"package declaring it under the entry-point group {group!r}"
        )
    return EntryPoint(name, target, group).load()


def executor_class(name: str = DEFAULT_EXECUTOR) -> Callable[..., Executor]:
    """The executor class registered as ``name``; its constructor's arguments are its own."""
    found: Callable[..., Executor] = load(EXECUTORS, name, what="executor")
    return found


def byte_store_class(scheme: str) -> type[ByteStore]:
    """The byte store serving URLs of ``scheme`` (``s3``, ``file``, ``argosy-task+http``)."""
    found: type[ByteStore] = load(BYTE_STORES, scheme, what="artifact store scheme")
    return found
