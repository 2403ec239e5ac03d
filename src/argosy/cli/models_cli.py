"""The arguments of ``argosy models ...`` (what they do: :mod:`argosy.cli.model_commands`,
imported lazily so that ``argosy --help`` stays cheap)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from argosy.cli.options import Format, OutputOpt, ServerOpt, WideOpt

models_app = typer.Typer(
    help="The model registry: register run outputs as model versions, promote them to "
    "aliases (staging, production) with a recorded history, and serve them.",
    no_args_is_help=True,
)

With = Callable[[str | None, Callable[[Any], Any]], Any]
_with: With | None = None


def _on_backend(server: str | None, act: Callable[[Any], Any]) -> Any:
    assert _with is not None
    return _with(server, act)


ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help="the model's name")]
AliasOpt = Annotated[
    str, typer.Option("--alias", "-a", metavar="ALIAS", help="e.g. staging or production")
]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", "-m", help="why (kept in the model's history)")
]


@models_app.command("register")
def models_register(
    name: ModelArg,
    artifact: Annotated[
        str, typer.Argument(metavar="ARTIFACT", help="RUN/NODE/OUTPUT or an artifact id")
    ],
    target: Annotated[
        str | None,
        typer.Option(help="the training data's label column: the model's output schema"),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            metavar="COLUMN",
            help="a training-data column that is no input (repeatable)",
        ),
    ] = None,
    training_data: Annotated[
        str | None,
        typer.Option(
            metavar="REF",
            help="the data frame the model was fitted on (default: found through lineage)",
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(help="a note kept with the version")] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Register a run's output as the next version of MODEL (created on first use), with its
    metrics, lineage and input/output schema (read from the training data)."""
    from argosy.cli import model_commands

    _on_backend(
        server,
        lambda b: model_commands.register(
            b, name, artifact, target=target, exclude=exclude or [], training_data=training_data,
            description=description, json_output=output == Format.json,
        ),
    )  # fmt: skip


@models_app.command("list")
def models_list(
    output: OutputOpt = Format.text, server: ServerOpt = None, wide: WideOpt = False
) -> None:
    """The tenant's models, their newest version and aliases."""
    from argosy.cli import commands, model_commands

    if wide:
        commands.use_wide()
    _on_backend(server, lambda b: model_commands.list_models(b, output == Format.json))


@models_app.command("show")
def models_show(
    ref: Annotated[
        str, typer.Argument(metavar="MODEL[@ALIAS|@VERSION]", help="a model, or one version")
    ],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
    wide: WideOpt = False,
) -> None:
    """A model and its versions; with @ALIAS or @VERSION one version (schema, lineage, metrics)."""
    from argosy.cli import commands, model_commands

    if wide:
        commands.use_wide()
    _on_backend(server, lambda b: model_commands.show(b, ref, output == Format.json))


@models_app.command("promote")
def models_promote(
    name: ModelArg,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1)],
    alias: AliasOpt,
    reason: ReasonOpt = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Point ALIAS at VERSION (the move is recorded with who, when and why); an alias the
    tenant's promotion policy reserves (see 'argosy models policy') gets a pending request
    that another owner approves with 'argosy models approve REQUEST'."""
    from argosy.cli import model_commands

    _on_backend(
        server,
        lambda b: model_commands.promote(b, name, version, alias, reason, output == Format.json),
    )


@models_app.command("demote")
def models_demote(
    name: ModelArg,
    alias: AliasOpt,
    reason: ReasonOpt = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Remove ALIAS from the model (recorded in its history)."""
    from argosy.cli import model_commands

    _on_backend(
        server, lambda b: model_commands.demote(b, name, alias, reason, output == Format.json)
    )


@models_app.command("history")
def models_history(
    name: ModelArg,
    alias: Annotated[str | None, typer.Option("--alias", "-a", metavar="ALIAS")] = None,
    at: Annotated[
        str | None,
        typer.Option(
            metavar="TIME", help="with --alias: the version it pointed at then (ISO 8601)"
        ),
    ] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
    wide: WideOpt = False,
) -> None:
    """Every promotion and demotion, newest first; --at TIME --alias A: what A was then."""
    from argosy.cli import commands, model_commands

    if wide:
        commands.use_wide()
    _on_backend(server, lambda b: model_commands.history(b, name, alias, at, output == Format.json))


RequestArg = Annotated[str, typer.Argument(metavar="REQUEST", help="a promotion request's id")]
CommentOpt = Annotated[str | None, typer.Option("--comment", "-m", help="why (kept with it)")]


@models_app.command("requests")
def models_requests(
    state: Annotated[
        str | None,
        typer.Option(metavar="STATE", help="only pending, approved, denied or expired ones"),
    ] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
    wide: WideOpt = False,
) -> None:
    """Promotion requests of the tenant's models, newest first."""
    from argosy.cli import commands, model_commands

    if wide:
        commands.use_wide()
    _on_backend(server, lambda b: model_commands.requests(b, state, output == Format.json))


@models_app.command("approve")
def models_approve(
    request: RequestArg, comment: CommentOpt = None, output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:  # fmt: skip
    """Approve a promotion request (owners other than the requester): the alias moves now."""
    from argosy.cli import model_commands

    _on_backend(
        server,
        lambda b: model_commands.decide(b, request, True, comment, output == Format.json),
    )


@models_app.command("deny")
def models_deny(
    request: RequestArg, comment: CommentOpt = None, output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:  # fmt: skip
    """Deny a promotion request (owners other than the requester): nothing moves."""
    from argosy.cli import model_commands

    _on_backend(
        server,
        lambda b: model_commands.decide(b, request, False, comment, output == Format.json),
    )


@models_app.command("policy")
def models_policy(
    approval: Annotated[
        list[str] | None,
        typer.Option(
            "--approval", metavar="ALIAS",
            help="an alias that moves only by an approved request (repeatable; replaces the "
            "list)",
        ),
    ] = None,
    no_approval: Annotated[
        bool, typer.Option("--no-approval", help="every alias moves at once")
    ] = False,
    expire_after_days: Annotated[
        float | None,
        typer.Option(min=0.00001, help="days a request waits for its decision, then expires"),
    ] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:  # fmt: skip
    """Show the tenant's promotion policy, or set it (owners): e.g. --approval production."""
    from argosy.cli import model_commands

    _on_backend(
        server,
        lambda b: model_commands.policy(
            b, [] if no_approval else approval, expire_after_days, output == Format.json
        ),
    )


@models_app.command("serve")
def models_serve(
    ref: Annotated[
        str, typer.Argument(metavar="MODEL@ALIAS", help="what to serve (MODEL@VERSION: pinned)")
    ],
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0: any free port")] = 8080,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="answer /predict without a bearer token")
    ] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="seconds between reads of the alias")] = 5.0,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="swap versions when the alias moves")
    ] = True,
    token_cache: Annotated[
        float,
        typer.Option(min=0, help="seconds the server's answer about a token is remembered"),
    ] = 30.0,
    server: ServerOpt = None,
) -> None:
    """Serve a model alias over HTTP: POST /predict (checked against its input schema),
    GET /health, /metadata, /metrics; swaps versions when the alias moves, dropping no request."""
    from argosy.serving.serve import serve

    _on_backend(
        server,
        lambda b: serve(
            b,
            ref,
            host=host,
            port=port,
            insecure=insecure,
            poll=poll,
            follow=follow,
            token_cache=token_cache,
        ),
    )


def register(app: typer.Typer, with_backend: With) -> None:
    """Add ``argosy models`` to ``app``; commands act through ``with_backend(server, act)``."""
    global _with
    _with = with_backend
    app.add_typer(models_app, name="models")
