"""Upkeep of the warehouse's storage: what the `warehouse_maintenance` job and `consent maintain` do.

On DuckLake every commit is a snapshot, and every write adds Parquet files: a night adds many
small ones, and the files of replaced rows stay for as long as a snapshot refers to them. So:

1. `ducklake_merge_adjacent_files` merges the small files of each table into larger ones (the rows
   and every kept snapshot read the same);
2. `ducklake_expire_snapshots` forgets the snapshots older than the retention
   (`CONSENT_SNAPSHOT_RETENTION_DAYS`): the warehouse can be opened as it stood at any moment within
   the retention, no earlier (the latest snapshot is never expired);
3. `ducklake_cleanup_old_files` deletes the files that no kept snapshot refers to any more (a
   reader holds a kept snapshot, whose files are never among them).

A file warehouse has no snapshots and no small files: it is checkpointed (its write-ahead log
folded into the file), and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import duckdb

from consent.storage.access import WarehouseAccess

ALIAS = "warehouse"
_COUNTS = (
    "SELECT (SELECT count(*) FROM ducklake_snapshots('warehouse')), "
    "(SELECT count(*) FROM __ducklake_metadata_warehouse.ducklake_data_file), "
    "(SELECT count(*) FROM __ducklake_metadata_warehouse.ducklake_delete_file)"
)


@dataclass
class Maintenance:
    """What one maintenance did: counts before and after (DuckLake), and a line per step."""

    storage: str  # "ducklake" or "file"
    retention_days: int
    snapshots: tuple[int, int] = (0, 0)  # before, after
    data_files: tuple[int, int] = (0, 0)
    delete_files: tuple[int, int] = (0, 0)
    files_removed: int = 0
    lines: list[str] = field(default_factory=list)


def maintain(warehouse: WarehouseAccess, now: datetime | None = None) -> Maintenance:
    """Merge small files, expire snapshots older than the retention, delete unreferenced files (DuckLake);
    checkpoint a file warehouse. The caller holds the run lock of a file warehouse."""
    retention = warehouse.retention_days
    if not warehouse.lake:
        with warehouse.connect() as con:
            con.execute("CHECKPOINT")
        return Maintenance("file", retention, lines=[
            "a file warehouse keeps no snapshots and no small files: checkpointed (write-ahead log folded into the file)"])
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    older_than = now - timedelta(days=retention)
    with warehouse.connect() as con:
        return _maintain_lake(con, retention, older_than)


def _maintain_lake(con: duckdb.DuckDBPyConnection, retention: int, older_than: datetime) -> Maintenance:
    before = con.execute(_COUNTS).fetchone()
    con.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')").fetchall()
    # snapshot times are TIMESTAMPTZ; the connection's time zone is UTC, as is `older_than`
    expired = con.execute(f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => ?::TIMESTAMPTZ)",
                          [older_than]).fetchall()
    removed = con.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)").fetchall()
    after = con.execute(_COUNTS).fetchone()
    done = Maintenance("ducklake", retention, (before[0], after[0]), (before[1], after[1]), (before[2], after[2]),
                       len(removed))
    done.lines = [
        f"data files in the catalog: {before[1]} -> {after[1]}, delete files: {before[2]} -> {after[2]} "
        "(small files merged; files of expired snapshots dropped)",
        f"snapshots older than {retention} days (before {older_than.isoformat(sep=' ')} UTC): {len(expired)} expired, "
        f"{after[0]} kept",
        f"files no kept snapshot refers to: {len(removed)} deleted",
    ]
    return done
