"""``argosy costs``, ``gc``, ``runs delete``, ``retention``, ``holds`` and ``retrievals``:
their arguments (what they do is in :mod:`argosy.cli.operations`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from argosy.cli import operations
from argosy.cli.options import Format, OutputOpt, ServerOpt


class CostOutput(StrEnum):
    text = "text"
    json = "json"
    csv = "csv"


Since = Annotated[str | None, typer.Option(help="from (ISO time, or 7d, 12h ago)")]
Until = Annotated[str | None, typer.Option(help="until (ISO time, or 1d ago)")]


# -- registration -------------------------------------------------------------------------------
def register(app: typer.Typer, runs_app: typer.Typer, with_backend: Any) -> None:
    """Declare ``argosy costs``, ``gc``, ``runs delete``, ``retention``, ``holds``,
    ``retrievals`` on the CLI (``with_backend(server, act)`` calls ``act`` on the backend)."""
    costs_app = typer.Typer(help="What runs cost: measured use x the price list.",
                            no_args_is_help=True)  # fmt: skip
    app.add_typer(costs_app, name="costs")

    @costs_app.command("report")
    def costs_report(
        by: Annotated[
            str, typer.Option(help="group by: tenant, pipeline, run, user, day or task")
        ] = "run",
        since: Since = None,
        until: Until = None,
        run: Annotated[str | None, typer.Option(help="only this run")] = None,
        all_tenants: Annotated[
            bool, typer.Option("--all-tenants", help="every tenant (a server's admins)")
        ] = False,
        output: Annotated[CostOutput, typer.Option("--output", "-o")] = CostOutput.text,
        server: ServerOpt = None,
    ) -> None:
        """Cost per group: each attempt charged on max(requested, used) CPU, memory and GPU
        for its wall time, at its node pool's prices."""
        with_backend(server, lambda b: operations.cost_report(
            b, by, since=since, until=until, run=run, all_tenants=all_tenants,
            output=output.value,
        ))  # fmt: skip

    @costs_app.command("budget")
    def costs_budget(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
        """This month's cost against the tenant's budget."""
        with_backend(server, lambda b: operations.show_budget(b, output == Format.json))

    @app.command("gc")
    def gc_command(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="report what would be freed, remove nothing")
        ] = False,
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Remove what nothing refers to: unreferenced blobs, records of deleted runs, leftover
        attempt folders, cached downloads (on a server: platform admins)."""
        with_backend(server, lambda b: operations.gc(
            b, dry_run=dry_run, json_output=output == Format.json))  # fmt: skip

    @runs_app.command("delete")
    def runs_delete(
        runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="run ids or prefixes")],
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Delete runs: their rows, logs and the blobs nothing else refers to, together (a
        running or held run is refused)."""
        with_backend(server, lambda b: operations.delete_runs(
            b, runs, json_output=output == Format.json))  # fmt: skip
