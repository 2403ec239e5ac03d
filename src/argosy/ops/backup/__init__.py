"""Backup, restore, export and import of the metadata database, with a manifest of its blobs.

One portable, logical format serves all four, on SQLite and PostgreSQL alike::

    DEST/                          a folder, or the same inside DEST.tar / DEST.tar.gz
      backup.json                  the index: format, kind, Argosy version, Alembic revision,
                                   tenants, and the tables in foreign-key order with their
                                   columns, row counts and the sha256 of each file
      metadata/<table>.jsonl       one JSON object per row, in primary-key order
      manifest.json                per tenant, every blob the metadata references (artifacts,
                                   imported input files, code packages, environment manifests)
      blobs/<ab>/<sha256>          the blobs themselves, when asked for
      records/<tenant>/runs/...    run records (attempt logs, results), with the blobs

- :func:`write_backup` — a snapshot of a database (all tenants, or one for an export);
- :func:`restore` — into an empty database: migrate it to the backup's revision, load the
  rows, migrate to head, all in one transaction; then check every blob in the manifest;
- :func:`import_backup` — merge into a database in use: rows already there are skipped,
  pipelines and versions that exist under the same name or digest are merged into them, and
  tenants can be renamed; blobs are copied under the new tenant's prefix.

The modules: :mod:`.format` (names, rows as JSON, progress), :mod:`.manifest` (what the rows
reference), :mod:`.reading` (a database read at one instant), :mod:`.transfer` (blobs and
records in and out, hash-checked), :mod:`.verify`, :mod:`.archive` (writing and opening a
backup), :mod:`.revisions` (schema revisions), :mod:`.restore` and :mod:`.merge` (import).
Nothing here prints: progress goes to a :class:`Reporter` that the CLI draws.
"""

from argosy.ops.backup.archive import Backup, BackupSummary, open_backup, write_backup
from argosy.ops.backup.format import Reporter
from argosy.ops.backup.manifest import BlobProblem, Manifest
from argosy.ops.backup.merge import import_backup
from argosy.ops.backup.reading import dump, snapshot
from argosy.ops.backup.restore import RestoreSummary, restore
from argosy.ops.backup.revisions import revision_chain
from argosy.ops.backup.verify import verify_blobs

__all__ = [
    "Backup",
    "BackupSummary",
    "BlobProblem",
    "Manifest",
    "Reporter",
    "RestoreSummary",
    "dump",
    "import_backup",
    "open_backup",
    "restore",
    "revision_chain",
    "snapshot",
    "verify_blobs",
    "write_backup",
]
