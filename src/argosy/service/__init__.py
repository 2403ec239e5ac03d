"""The application layer: one function per use case, written once for every home.

Local mode (the CLI and the Python API on a laptop's ``.argosy`` state), the server's REST
routes and the web UI all call these functions; each takes a :class:`ServiceContext`
(metadata store, the tenant's artifact store, the tenant, who acts) and returns the wire
documents of :mod:`argosy.api`, so a run looks the same wherever it is read.

What is decided here: references resolved, requests checked, documents assembled, and the
state changes outside the engine (pipeline versions, run creation, schedules). Run, task
and attempt *states* are written only by the engine (``argosy.engine``): cancelling a run
asks the engine's cancellation rule, and no service runs an engine loop. Authorization is
not decided here: the server authorizes every request before it calls a service; local
mode has one user.

Modules: ``documents`` (rows -> documents), ``runs``, ``pipelines``, ``artifacts``,
``lineage``, ``compare`` (diff and drift), ``logs``, ``schedules``, ``uploads``.
"""

from argosy.service.context import ServiceContext

__all__ = ["ServiceContext"]
