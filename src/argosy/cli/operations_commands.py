"""``argosy costs``, ``gc``, ``runs delete``, ``retention``, ``holds`` and ``retrievals``:
their arguments (what they do is in :mod:`argosy.cli.operations`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

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
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.cost_report(
            b, by, since=since, until=until, run=run, all_tenants=all_tenants,
            output=output.value,
        ))  # fmt: skip

    @costs_app.command("budget")
    def costs_budget(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
        """This month's cost against the tenant's budget."""
        from argosy.cli import operations  # here: `argosy --help` stays light

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
        from argosy.cli import operations  # here: `argosy --help` stays light

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
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.delete_runs(
            b, runs, json_output=output == Format.json))  # fmt: skip

    retention_app = typer.Typer(help="Retention: archive after N days, delete after M days.",
                                no_args_is_help=True)  # fmt: skip
    holds_app = typer.Typer(help="Legal holds: runs and artifacts kept as they are.",
                            no_args_is_help=True)  # fmt: skip
    retrievals_app = typer.Typer(
        help="Requests for archived data, approved by another tenant owner.", no_args_is_help=True
    )
    app.add_typer(retention_app, name="retention")
    app.add_typer(holds_app, name="holds")
    app.add_typer(retrievals_app, name="retrievals")

    @retention_app.command("show")
    def retention_show(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
        """The tenant's retention policy."""
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show(b.retention_policy(), output == Format.json))

    @retention_app.command("set")
    def retention_set(
        archive_after_days: Annotated[float | None, typer.Option(min=0.001)] = None,
        delete_after_days: Annotated[float | None, typer.Option(min=0.001)] = None,
        window_days: Annotated[
            float | None, typer.Option(min=0.001, help="how long a retrieval stays readable")
        ] = None,
        never_delete: Annotated[bool, typer.Option("--never-delete")] = False,
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Change the tenant's retention policy (owners)."""
        from argosy.api.ops import RetentionPolicyUpdate

        fields: dict[str, Any] = {}
        if archive_after_days is not None:
            fields["archive_after_days"] = archive_after_days
        if delete_after_days is not None or never_delete:
            fields["delete_after_days"] = None if never_delete else delete_after_days
        if window_days is not None:
            fields["retrieval_window_days"] = window_days
        update = RetentionPolicyUpdate(**fields)
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show(b.set_retention(update),
                                                       output == Format.json))  # fmt: skip

    @retention_app.command("run")
    def retention_run(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
        """Run the lifecycle job now: index logs, archive, delete, end retrieval windows."""
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show(b.run_lifecycle(), output == Format.json))

    hold_columns = ("id", "target_kind", "target_id", "reason", "created_by", "released_at")

    @holds_app.command("list")
    def holds_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
        """Legal holds of the tenant (released ones too)."""
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show_list(
            b.list_holds(), output == Format.json, hold_columns))  # fmt: skip

    @holds_app.command("place")
    def holds_place(
        target: Annotated[str, typer.Argument(metavar="RUN|ARTIFACT")],
        reason: Annotated[str, typer.Option(help="why (recorded and audited)")],
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Keep a run or an artifact as it is: never archived, never deleted (owners)."""
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show(b.place_hold(target, reason),
                                                       output == Format.json))  # fmt: skip

    @holds_app.command("release")
    def holds_release(
        hold_id: Annotated[str, typer.Argument(metavar="HOLD")],
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Release a legal hold (owners)."""
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show(b.release_hold(hold_id),
                                                       output == Format.json))  # fmt: skip

    retrieval_columns = ("id", "state", "target_kind", "target_id", "requested_by",
                         "decided_by", "readable_until", "reason")  # fmt: skip

    @retrievals_app.command("list")
    def retrievals_list(
        state: Annotated[
            str | None, typer.Option(help="pending, approved, denied, expired")
        ] = None,
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Retrieval requests of the tenant, newest first."""
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show_list(
            b.list_retrievals(state), output == Format.json, retrieval_columns))  # fmt: skip

    @retrievals_app.command("request")
    def retrievals_request(
        target: Annotated[str, typer.Argument(metavar="RUN|ARTIFACT")],
        reason: Annotated[str, typer.Option(help="why you need it (the approver reads it)")],
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Ask for the archived data of a run or an artifact back."""
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show(b.request_retrieval(target, reason),
                                                       output == Format.json))  # fmt: skip

    def _decide(retrieval_id: str, approve: bool, comment: str | None, json_output: bool,
                server: str | None) -> None:  # fmt: skip
        from argosy.cli import operations  # here: `argosy --help` stays light

        with_backend(server, lambda b: operations.show(
            b.decide_retrieval(retrieval_id, approve, comment), json_output))  # fmt: skip

    @retrievals_app.command("approve")
    def retrievals_approve(
        retrieval_id: Annotated[str, typer.Argument(metavar="REQUEST")],
        comment: Annotated[str | None, typer.Option()] = None,
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Approve (owners other than the requester): readable for the retrieval window."""
        _decide(retrieval_id, True, comment, output == Format.json, server)

    @retrievals_app.command("deny")
    def retrievals_deny(
        retrieval_id: Annotated[str, typer.Argument(metavar="REQUEST")],
        comment: Annotated[str | None, typer.Option()] = None,
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Deny a retrieval request (owners other than the requester)."""
        _decide(retrieval_id, False, comment, output == Format.json, server)
