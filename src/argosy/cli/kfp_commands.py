"""``argosy compile --target kfp``: a pipeline as KFP v2 IR (see docs/kubeflow.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from argosy.config import Settings


def compile_kfp(settings: Settings, target: str, dest: Path | None, image: str | None) -> None:
    from argosy.cli.commands import compile_target
    from argosy.interop.kfp.export import pipeline_spec, to_yaml

    compiled = compile_target(settings, target)
    documents = pipeline_spec(compiled.spec, image=image)
    text = to_yaml(documents)
    if dest is None:
        sys.stdout.write(text)
        return
    dest.write_text(text)
    name = documents[0]["pipelineInfo"]["name"]
    typer.echo(f"wrote KFP pipeline {name} to {dest}", err=True)
