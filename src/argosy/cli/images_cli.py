"""``argosy images build|lock``: the project's component images (``argosy.toml``), built in
parallel, pushed, and pinned by digest (:mod:`argosy.ops.images`)."""

from __future__ import annotations

from typing import Annotated

import typer

from argosy.cli.options import Format, OutputOpt

images_app = typer.Typer(
    help="Build, push and pin (by digest) the component images listed in argosy.toml.",
    no_args_is_help=True,
)


@images_app.command("build")
def images_build(
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAME]...", help="default: every image")
    ] = None,
    push: Annotated[bool, typer.Option("--push", help="push each image once built")] = False,
    tag: Annotated[
        str | None, typer.Option(metavar="TAG", help="instead of argosy.toml's (CI: the git SHA)")
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="images built at once")] = 4,
    output: OutputOpt = Format.text,
) -> None:
    """Build the images (in parallel, one progress line per step on stderr), and push them."""
    from argosy.cli.commands import emit_json, err
    from argosy.ops import images

    project = images.load_project()
    built = images.build(
        project, names or [], tag=tag, push=push, jobs=jobs,
        say=lambda line: err.print(line, highlight=False, markup=False),
    )  # fmt: skip
    if output == Format.json:
        emit_json({"images": [b.__dict__ for b in built]})


@images_app.command("lock")
def images_lock(
    tag: Annotated[str | None, typer.Option(metavar="TAG", help="lock this tag of each")] = None,
    output: OutputOpt = Format.text,
) -> None:
    """Ask each image's registry for the digest its tag points at and write argosy.lock.json;
    'argosy pipelines push' pins container steps with it. Private registries: the credentials
    of 'podman login' / 'docker login' (REGISTRY_AUTH_FILE, then podman's and docker's auth
    files); a registry that still refuses exits 3."""
    from argosy.cli.commands import emit_json, err
    from argosy.ops import images

    project = images.load_project()
    doc = images.lock(project, tag=tag)
    if output == Format.json:
        emit_json(doc)
        return
    for name, entry in doc["images"].items():
        err.print(f"{name}: {entry['pinned']}", highlight=False, markup=False)
    err.print(f"wrote {project.lock_path}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")
