"""The Python API of the model registry (the same calls as ``argosy models ...``)::

    import argosy

    run = breast_cancer.run()
    version = argosy.register_model("breast-cancer", run.outputs["model"], target="malignant",
                                    exclude=["patient_id"])
    model = argosy.Model("breast-cancer")
    model.promote(version.version, "production", reason="best ROC AUC")
    model.history()                                 # every promotion and demotion
    model.alias_at("production", at=datetime(2026, 12, 3, tzinfo=UTC)).version
    estimator = model.load("production")            # loaded by its serializer

Like runs, it acts through the backend protocol: the local state folder, or a server after
:func:`argosy.connect`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from argosy import api

if TYPE_CHECKING:
    from pathlib import Path

    from argosy.client.backend import Backend
    from argosy.client.runs import Output


def register_model(
    name: str,
    artifact: str | Output,
    *,
    target: str | None = None,
    exclude: list[str] | None = None,
    training_data: str | None = None,
    description: str | None = None,
    backend: Backend | None = None,
) -> api.ModelVersion:
    """Register a run's output (an :class:`~argosy.client.runs.Output`, ``RUN/NODE/OUTPUT``
    or an artifact id) as the next version of model ``name``; the same artifact again returns
    its version."""
    from argosy.client.runs import backend_of

    ref = artifact if isinstance(artifact, str) else artifact.ref.ref
    body = api.ModelVersionCreate(
        artifact=ref, target=target, exclude=exclude or [], training_data=training_data,
        description=description,
    )  # fmt: skip
    return backend_of(backend).register_model(name, body).version


def models(*, backend: Backend | None = None) -> list[Model]:
    """The tenant's models."""
    from argosy.client.runs import backend_of

    found = backend_of(backend)
    return [Model(m.name, backend=found) for m in found.list_models()]


class Model:
    """A registered model: its versions, aliases and history."""

    def __init__(self, name: str, *, backend: Backend | None = None) -> None:
        from argosy.client.runs import backend_of

        self.name = name
        self.backend = backend_of(backend)

    def __repr__(self) -> str:
        return f"<Model {self.name}>"

    @property
    def document(self) -> api.Model:
        return self.backend.get_model(self.name)

    @property
    def aliases(self) -> dict[str, int]:
        return dict(self.document.aliases)

    @property
    def versions(self) -> list[api.ModelVersion]:
        """Newest first."""
        return self.backend.list_model_versions(self.name)

    def version(self, which: int | str | None = None) -> api.ModelVersion:
        """A version by number or alias (default: the newest)."""
        return self.backend.get_model_version(self.name, None if which is None else str(which))

    def promote(
        self, version: int, alias: str, *, reason: str | None = None
    ) -> api.AliasEvent | api.PromotionRequest:
        """The move; or, where the tenant's promotion policy reserves ``alias`` (e.g.
        ``production``), a pending request that another owner approves."""
        return self.backend.promote_model(self.name, alias, version, reason)

    def requests(self, state: str | None = None) -> list[api.PromotionRequest]:
        """This model's promotion requests, newest first."""
        return [r for r in self.backend.list_promotions(state) if r.model == self.name]

    def demote(self, alias: str, *, reason: str | None = None) -> api.AliasEvent:
        return self.backend.demote_model(self.name, alias, reason)

    def history(self, alias: str | None = None) -> list[api.AliasEvent]:
        """Every promotion and demotion, newest first."""
        return self.backend.model_history(self.name, alias)

    def alias_at(self, alias: str, at: datetime | None = None) -> api.AliasState:
        """Which version ``alias`` pointed at, at ``at`` (default: now)."""
        return self.backend.model_alias_at(self.name, alias, at)

    def load(self, which: int | str | None = None, *, into: Path | None = None) -> Any:
        """The model object of a version (number, alias, default the newest), read by its
        serializer (joblib and pickle load only in the tenant that wrote them)."""
        from argosy.client.runs import Output

        v = self.version(which)
        art = self.backend.get_artifact(v.artifact_id)
        ref = api.ArtifactRef(
            artifact_id=art.id, ref=art.ref, type=art.type, format=art.format,
            sha256=art.sha256, size=art.size,
        )  # fmt: skip
        return Output(ref, self.backend).load(into=into)
