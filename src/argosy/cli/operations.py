"""What the operations commands do, written once against the backend protocol: ``argosy logs
--search``, ``argosy costs``, ``argosy gc``, ``argosy runs delete``, ``argosy retention``,
``argosy holds`` and ``argosy retrievals`` (``register`` declares their arguments).

``--output json`` prints the API document; text output is a table on stdout.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from argosy.cli.commands import emit_json, out, table_of
from argosy.client.backend import Backend
from argosy.errors import UsageError

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(value: str | None, what: str) -> datetime | None:
    """An ISO-8601 time (UTC unless it says), or a span before now: ``90m``, ``2h``, ``7d``."""
    if value is None:
        return None
    text = value.strip()
    ago = _AGO.match(text)
    if ago:
        return datetime.now(UTC) - timedelta(seconds=float(ago.group(1)) * _UNITS[ago.group(2)])
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{what} {value!r} is not a time: give an ISO-8601 time (2026-12-01, "
            "2026-12-01T08:00) or a span before now (30m, 2h, 7d)"
        ) from None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found


# -- logs --search ------------------------------------------------------------------------------
def search_logs(
    backend: Backend,
    query: str,
    *,
    run: str | None,
    pipeline: str | None,
    step: str | None,
    since: str | None,
    until: str | None,
    stream: str | None,
    limit: int,
    json_output: bool,
) -> None:
    page = backend.search_logs(
        query, run=run, pipeline=pipeline, step=step, since=parse_time(since, "--since"),
        until=parse_time(until, "--until"), stream=stream, limit=limit,
    )  # fmt: skip
    if json_output:
        emit_json(page)
        return
    if not page.items:
        sys.stderr.write(f"no line of {backend.tenant!r}'s task logs holds {query!r}\n")
        return
    table = table_of("run", "pipeline", "node", "try", "time", "line", flexible=("line", "node"))
    for hit in page.items:
        table.add_row(
            hit.run_id, hit.pipeline, hit.node_path, str(hit.attempt), hit.time[:19], hit.line
        )
    out.print(table)
    if page.next_cursor:
        sys.stderr.write(f"(the newest {len(page.items)} shown; raise --limit for more)\n")


def _rows_json(items: list[Any]) -> list[dict[str, Any]]:
    return [i.model_dump(mode="json") for i in items]


# -- costs --------------------------------------------------------------------------------------
def _money(value: float, currency: str) -> str:
    return f"{value:,.4f} {currency}" if value < 1 else f"{value:,.2f} {currency}"


def cost_report(
    backend: Backend,
    by: str,
    *,
    since: str | None,
    until: str | None,
    run: str | None,
    all_tenants: bool,
    output: str,
) -> None:
    report = backend.cost_report(
        by, since=parse_time(since, "--since"), until=parse_time(until, "--until"), run=run,
        all_tenants=all_tenants,
    )  # fmt: skip
    if output == "json":
        emit_json(report)
        return
    if output == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow([by, "tenant", "attempts", "cpu_hours", "memory_gib_hours",
                         "gpu_hours", "wall_hours", f"cost_{report.currency}"])  # fmt: skip
        for line in report.items:
            writer.writerow([line.key, line.tenant, line.attempts, f"{line.cpu_hours:.6f}",
                             f"{line.memory_gib_hours:.6f}", f"{line.gpu_hours:.6f}",
                             f"{line.wall_hours:.6f}", f"{line.cost:.6f}"])  # fmt: skip
        return
    table = table_of(by, "tenant", "attempts", "cpu h", "GiB h", "gpu h", "cost", flexible=(by,))
    for line in report.items:
        table.add_row(
            line.key, line.tenant, str(line.attempts), f"{line.cpu_hours:.3f}",
            f"{line.memory_gib_hours:.3f}", f"{line.gpu_hours:.3f}",
            _money(line.cost, report.currency),
        )  # fmt: skip
    out.print(table)
    out.print(f"total {_money(report.total, report.currency)}")


def show_budget(backend: Backend, json_output: bool) -> None:
    found = backend.budget()
    if json_output:
        emit_json(found)
        return
    if found.monthly is None:
        out.print(
            f"tenant {found.tenant}: no budget; this month so far "
            f"{_money(found.month_to_date, found.currency)} (set one: the tenant's budget setting)"
        )
        return
    out.print(
        f"tenant {found.tenant}: {_money(found.month_to_date, found.currency)} of "
        f"{_money(found.monthly, found.currency)} this month ({found.state})"
    )


# -- clean-up -----------------------------------------------------------------------------------
def gc(backend: Backend, *, dry_run: bool, json_output: bool) -> None:
    from argosy.units import format_bytes

    report = backend.gc(dry_run)
    if json_output:
        emit_json(report)
        return
    verb = "would free" if dry_run else "freed"
    out.print(
        f"{verb} {format_bytes(report.total_bytes)}: {report.blobs} unreferenced blobs "
        f"({format_bytes(report.blob_bytes)}), {report.logs} records of deleted runs "
        f"({format_bytes(report.log_bytes)}), {report.attempt_folders} attempt folders "
        f"({format_bytes(report.attempt_folder_bytes)}), {report.cache_files} cached downloads "
        f"({format_bytes(report.cache_bytes)})"
    )
    if dry_run and report.total_bytes:
        sys.stderr.write("run 'argosy gc' without --dry-run to remove them\n")


def delete_runs(backend: Backend, refs: list[str], *, json_output: bool) -> None:
    from argosy.units import format_bytes

    done = backend.delete_runs(refs)
    if json_output:
        emit_json(done)
        return
    out.print(
        f"deleted {len(done.runs)} run(s) with {done.artifacts} artifact(s); "
        f"{done.blobs_freed} blob(s) ({format_bytes(done.bytes_freed)}) freed"
    )


# -- retention, holds, retrievals ---------------------------------------------------------------
def show(doc: Any, json_output: bool) -> None:
    """A document: JSON, or its fields one per line."""
    if json_output:
        emit_json(doc)
        return
    for name, value in doc.model_dump(mode="json").items():
        if name != "schema_version":
            out.print(f"{name}: {value}")


def show_list(items: list[Any], json_output: bool, columns: tuple[str, ...]) -> None:
    if json_output:
        emit_json({"items": _rows_json(items)})
        return
    table = table_of(*columns, flexible=("reason",) if "reason" in columns else ())
    for item in items:
        doc = item.model_dump(mode="json")
        table.add_row(*(str(doc.get(c) if doc.get(c) is not None else "") for c in columns))
    out.print(table)
