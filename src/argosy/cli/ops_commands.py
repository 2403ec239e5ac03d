"""What ``argosy db ...`` and ``argosy admin ...`` do (``main.py`` declares their arguments).

``db`` moves the metadata schema with Alembic and never touches rows; ``admin`` backs up,
restores, exports and imports the metadata (see :mod:`argosy.ops.backup`). Progress goes to
stderr (a live bar on a terminal); the result goes to stdout, as one JSON document with
``--output json``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from argosy.config import Settings, redact
from argosy.errors import StoreError, UsageError
from argosy.ops.backup import BlobProblem, Reporter, RestoreSummary

_TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = 250
    return console


def _consoles() -> tuple[Console, Console]:
    """stdout for results, stderr for progress and problems."""
    return _console(), _console(stderr=True)


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


class RichReporter(Reporter):
    """Progress bars on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, what: str, total: float | None = None) -> None:
        self.done()
        self._task = self.progress.add_task(what, total=total)

    def advance(self, amount: float = 1) -> None:
        if self._task is not None:
            self.progress.advance(self._task, amount)

    def done(self) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None


# -- db ---------------------------------------------------------------------------------------------


def _db_exists(url: str) -> bool:
    """False for a SQLite file that is not there yet (looking must not create it)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        return path.startswith(":memory:") or Path(path).is_file()
    return True


def _schema_state(settings: Settings) -> dict[str, Any]:
    """The database's revision against the ones this Argosy knows."""
    from argosy.ops.backup import revision_chain
    from argosy.stores.metadata.db import current_revision, open_engine

    url = settings.metadata_url
    chain = revision_chain(url)
    current: str | None = None
    if _db_exists(url):
        engine = open_engine(url, migrate=False)
        try:
            current = current_revision(engine)
        except Exception as exc:
            raise StoreError(f"cannot read {redact('database_url', url)}: {exc}") from exc
        finally:
            engine.dispose()
    return {
        "database": redact("database_url", url),
        "current": current,
        "head": chain[-1],
        "at_head": current == chain[-1],
        "known": current is None or current in chain,
        "chain": chain,
    }


def db_current(settings: Settings, json_output: bool, check: bool) -> int:
    state = _schema_state(settings)
    chain = state.pop("chain")
    if json_output:
        _emit_json(state)
    else:
        out, _ = _consoles()
        current, head = state["current"], state["head"]
        if current is None:
            line = f"no schema yet (head is {head}): run 'argosy db upgrade'"
        elif not state["known"]:
            line = (f"{current}: newer than this Argosy knows (head {head}); a newer Argosy "
                    "migrated it; upgrade Argosy")  # fmt: skip
        elif state["at_head"]:
            line = f"{current} (head): up to date"
        else:
            behind = len(chain) - 1 - chain.index(current)
            line = (f"{current}: {behind} revision{'s' if behind > 1 else ''} behind head "
                    f"{head}; run 'argosy db upgrade'")  # fmt: skip
        out.print(f"{state['database']}: {line}", highlight=False)
    return 1 if check and not state["at_head"] else 0


def db_history(settings: Settings, json_output: bool) -> None:
    from alembic.script import ScriptDirectory

    from argosy.stores.metadata.db import alembic_config

    state = _schema_state(settings)
    script = ScriptDirectory.from_config(alembic_config(settings.metadata_url))
    revisions = []
    for rev in reversed(list(script.walk_revisions())):
        revisions.append({
            "revision": rev.revision,
            "down_revision": rev.down_revision,
            "description": (rev.doc or "").strip().splitlines()[0] if rev.doc else "",
            "current": rev.revision == state["current"],
            "head": rev.revision == state["head"],
        })  # fmt: skip
    if json_output:
        _emit_json({"database": state["database"], "current": state["current"],
                    "head": state["head"], "revisions": revisions})  # fmt: skip
        return
    out, _ = _consoles()
    for r in revisions:
        marks = [m for m, on in (("current", r["current"]), ("head", r["head"])) if on]
        suffix = f"  ({', '.join(marks)})" if marks else ""
        out.print(f"{r['revision']}  {r['description']}{suffix}", highlight=False)
    if state["current"] is None:
        out.print("(the database has no schema yet: run 'argosy db upgrade')", highlight=False)


def db_upgrade(settings: Settings, to: str, json_output: bool) -> None:
    from alembic import command

    from argosy.stores.metadata.db import alembic_config, open_engine

    state = _schema_state(settings)
    chain: list[str] = state["chain"]
    target = chain[-1] if to == "head" else to
    if target not in chain:
        raise UsageError(f"unknown revision {to!r}; the revisions are {', '.join(chain)} (or head)")
    before = state["current"]
    if not state["known"]:
        raise UsageError(
            f"the database is at revision {before}, newer than this Argosy knows (head "
            f"{chain[-1]}); upgrade Argosy instead"
        )
    if before is not None and chain.index(before) > chain.index(target):
        raise UsageError(
            f"the database is at {before}, past {target}; 'db upgrade' only moves forward "
            "(migrations are expand/contract: an older Argosy runs on a newer schema)"
        )
    url = settings.metadata_url
    engine = open_engine(url, migrate=False)
    try:
        cfg = alembic_config(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, target)
    except Exception as exc:
        raise StoreError(f"migrating {state['database']} to {target} failed: {exc}") from exc
    finally:
        engine.dispose()
    doc = {"database": state["database"], "from": before, "to": target,
           "head": chain[-1], "changed": before != target}  # fmt: skip
    if json_output:
        _emit_json(doc)
        return
    out, _ = _consoles()
    head = " (head)" if target == chain[-1] else ""
    if before == target:
        out.print(f"{doc['database']}: already at {target}{head}", highlight=False)
    else:
        out.print(f"{doc['database']}: upgraded from {before or 'an empty database'} to "
                  f"{target}{head}", highlight=False)  # fmt: skip


# -- admin ------------------------------------------------------------------------------------------


def _backend(settings: Settings) -> Any:
    from argosy.stores.artifacts.blobs import open_artifact_store

    store = open_artifact_store(
        settings.artifacts_url, settings.tenant, settings.artifact_options()
    )
    return store.backend


def admin_backup(
    settings: Settings,
    dest: Path,
    *,
    blobs: bool,
    tenant: str | None,
    kind: str,
    json_output: bool,
) -> int:
    from argosy.ops.backup import write_backup

    out, err = _consoles()
    if tenant is not None and not _TENANT.match(tenant):
        raise UsageError(f"invalid tenant {tenant!r}: a DNS-1123 label such as 'team-a'")
    with RichReporter(err) as reporter:
        summary = write_backup(
            settings.metadata_url,
            dest,
            kind=kind,
            tenant=tenant,
            blobs_from=_backend(settings) if blobs else None,
            reporter=reporter,
            plain=plain_reader(settings, settings.metadata_url),
        )
    if json_output:
        _emit_json(summary.to_json())
    else:
        rows = sum(summary.tables.values())
        what = "export" if kind == "export" else "backup"
        copied = f", {summary.blobs_copied} copied" if blobs else ""
        out.print(
            f"{what} {summary.path}: schema {summary.revision}, {rows} rows in "
            f"{len(summary.tables)} tables, tenants {', '.join(summary.tenants) or '-'}; "
            f"manifest of {summary.blobs} blobs{copied}; {summary.seconds:.2f} s "
            f"(read snapshot held {summary.snapshot_seconds:.2f} s)",
            highlight=False,
        )
        _print_problems(err, summary.problems, "not copied")
    return 1 if summary.problems else 0


def _print_problems(console: Console, problems: list[BlobProblem], what: str) -> None:
    for p in problems[:50]:
        console.print(f"{p.problem}: {p}", highlight=False)
    if len(problems) > 50:
        console.print(f"... and {len(problems) - 50} more", highlight=False)
    if problems:
        console.print(
            f"{len(problems)} blob{'s' if len(problems) > 1 else ''} {what}: restore them "
            "from the object store's own backup (versioning/replication), or re-run the "
            "producing tasks with --no-cache",
            highlight=False,
        )


def _report_restore(summary: RestoreSummary, json_output: bool, verb: str) -> int:
    out, err = _consoles()
    if json_output:
        _emit_json(summary.to_json())
    else:
        present = sum(t["present"] for t in summary.tables.values())
        merged = sum(t["merged"] for t in summary.tables.values())
        extra = ""
        if present or merged:
            extra = f" ({present} already there, {merged} merged into existing rows)"
        renamed = [f"{a} -> {b}" for a, b in summary.tenants.items() if a != b]
        out.print(
            f"{verb} {summary.rows} rows{extra} into {summary.database} (schema "
            f"{summary.revision} -> {summary.head})"
            + (f"; tenants {', '.join(renamed)}" if renamed else ""),
            highlight=False,
        )
        if summary.runs_released:
            out.print(
                f"{summary.runs_released} unfinished run(s) released: continue them with "
                "'argosy runs resume RUN'",
                highlight=False,
            )
        out.print(
            f"blobs: {summary.blobs} in the manifest, {summary.blobs_copied} copied into the "
            f"store, checked by {summary.verify}: "
            + (f"{len(summary.problems)} with problems" if summary.problems else "all present"),
            highlight=False,
        )
        _print_problems(err, summary.problems, "missing or corrupt in the artifact store")
    return 1 if summary.problems else 0


def admin_restore(
    settings: Settings, src: Path, *, verify: str, release_runs: bool, json_output: bool
) -> int:
    from argosy.ops.backup import open_backup, restore

    _, err = _consoles()
    with open_backup(src) as backup, RichReporter(err) as reporter:
        summary = restore(
            backup, settings.metadata_url, store=_backend(settings), verify=verify,
            release_runs=release_runs, reporter=reporter,
            plain=plain_reader(settings, settings.metadata_url),
        )  # fmt: skip
    return _report_restore(summary, json_output, "restored")


def plain_reader(settings: Settings, url: str) -> Any:
    """Opens objects encrypted at rest for verification, with the data keys in the database
    at ``url`` and the deployment's key-encryption key (loaded on first use)."""
    keys: Any = None

    def read(tenant: str, raw: BinaryIO) -> BinaryIO:
        nonlocal keys
        if keys is None:
            from argosy.stores.keys import TenantKeys, provider_from_settings
            from argosy.stores.metadata.db import MetadataStore

            keys = TenantKeys(MetadataStore.open(url), provider_from_settings(settings))
        reader: BinaryIO = keys.cipher(tenant).reader(raw, f"an artifact of tenant {tenant!r}")
        return reader

    return read


def parse_tenant_map(items: list[str], tenants: list[str]) -> dict[str, str]:
    """``--tenant NEW`` (an export of one tenant) or ``--tenant OLD=NEW`` (repeatable)."""
    mapping: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep:
            if len(tenants) != 1:
                raise UsageError(
                    f"the export holds tenants {', '.join(tenants)}; say which to rename: "
                    f"--tenant OLD={item}"
                )
            old, new = tenants[0], item
        for name in (old, new):
            if not _TENANT.match(name):
                raise UsageError(f"invalid tenant {name!r}: a DNS-1123 label such as 'team-a'")
        mapping[old] = new
    return mapping


def admin_import(
    settings: Settings, src: Path, *, tenants: list[str], verify: str, json_output: bool
) -> int:
    from argosy.ops.backup import import_backup, open_backup

    _, err = _consoles()
    with open_backup(src) as backup:
        mapping = parse_tenant_map(tenants, backup.tenants)
        with RichReporter(err) as reporter:
            summary = import_backup(
                backup, settings.metadata_url, store=_backend(settings), tenant_map=mapping,
                verify=verify, reporter=reporter,
            )  # fmt: skip
    return _report_restore(summary, json_output, "imported")
