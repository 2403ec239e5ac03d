"""What CI needs from the CLI beside ``argosy run``: parameter files, run labels, and
``argosy runs wait RUN`` (exit code = outcome).

Exit codes of ``runs wait``: 0 the run succeeded, 1 it failed or was cancelled, 124 it was
still going when ``--timeout`` passed (as ``timeout(1)``), 2/3 as every command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from argosy import api
from argosy.cli.commands import emit_json, err
from argosy.client.backend import Backend
from argosy.errors import UsageError

TIMED_OUT = 124
DONE = frozenset({"succeeded", "failed", "cancelled"})
POLL_SECONDS = 1.0


def load_param_file(path: Path | None) -> dict[str, Any]:
    """A mapping of parameter names to values from a ``.json``, ``.yaml`` or ``.yml`` file
    (values keep their JSON/YAML types; they are checked against the pipeline's annotations)."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the parameter file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except ValueError as exc:  # yaml.YAMLError is no ValueError: caught below
        raise UsageError(f"the parameter file {path} is not valid JSON: {exc}") from None
    except Exception as exc:
        raise UsageError(f"the parameter file {path} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise UsageError(
            f"the parameter file {path} must hold a mapping of parameter names to values, "
            'e.g. {"seed": 7, "test_fraction": 0.3}'
        )
    return doc


def labels(name: str | None, tags: list[str], description: str | None) -> api.RunLabels | None:
    """``--name``, ``--tag k=v`` and ``--description`` as run labels (None: none given)."""
    from pydantic import ValidationError

    from argosy.service.runs import parse_tags

    if name is None and not tags and description is None:
        return None
    try:
        return api.RunLabels(name=name, description=description, tags=parse_tags(tags))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"run label: {first['msg'].removeprefix('Value error, ')}") from None


def wait_run(backend: Backend, ref: str, timeout: float | None, json_output: bool) -> int:
    """Until the run has finished (or ``timeout`` seconds): its outcome as the exit code; with
    ``json_output`` the run document (``runs show --output json``) on stdout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    run = backend.get_run(ref)
    while run.status not in DONE:
        if deadline is not None and time.monotonic() >= deadline:
            err.print(
                f"run {run.id} is still {run.status} after {timeout:g} s", highlight=False,
                markup=False,
            )  # fmt: skip
            if json_output:
                emit_json(backend.run_detail(run.id))
            return TIMED_OUT
        time.sleep(
            POLL_SECONDS
            if deadline is None
            else min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))
        )
        run = backend.get_run(run.id)
    if json_output:
        emit_json(backend.run_detail(run.id))
    else:
        why = f": {run.error}" if run.error else ""
        err.print(f"run {run.id} {run.status}{why}", highlight=False, markup=False)
    return 0 if run.status == "succeeded" else 1
