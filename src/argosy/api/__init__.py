"""The wire documents of Argosy: what the server answers, the client reads, the CLI prints
with ``--output json`` and the UI renders — one set of pydantic models, imported by every
layer that speaks them and importing nothing of Argosy above it.

Each top-level document carries ``schema_version``; within a version, changes are additive
only (new optional fields), checked against the committed JSON Schemas in
``src/argosy/api/schemas/``. ``argosy schema NAME`` prints one.
"""

from argosy.api.documents import *  # noqa: F403
from argosy.api.documents import __all__ as _documents

__all__ = list(_documents)
