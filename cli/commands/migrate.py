"""`consent migrate`: bring an older warehouse to this version's schema, in place, or copy a file
warehouse into a DuckLake catalog (`--to`), every table verified."""

from __future__ import annotations

import sys
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_OK, LOCK_HELP, WAREHOUSE_HELP, UsageError, _table, _warehouse, add_command


def register(sub) -> None:
    migrate = add_command(
        sub, "migrate", command_migrate,
        "migrate the warehouse to this version's schema, in place; with --to, copy a file warehouse into a DuckLake catalog",
        "consent migrate --warehouse warehouse/consent.duckdb",
        "consent migrate --warehouse warehouse/consent.duckdb --to ducklake:postgres:dbname=consent --data-path s3://bucket/consent",
    )
    migrate.add_argument("--warehouse", help=WAREHOUSE_HELP)
    migrate.add_argument("--to", help="an empty DuckLake catalog (ducklake:...) to copy the file warehouse into, "
                                      "every table verified (its Parquet files go to --data-path)")
    migrate.add_argument("--lock-timeout", type=float, help=LOCK_HELP)


def command_migrate(args) -> int:
    from consent.storage.migrations import LATEST, current_version

    if args.to:
        return _migrate_to_lake(args)
    warehouse = _warehouse(args)
    if not warehouse.exists():
        raise UsageError(f"no warehouse at {warehouse.describe()}")
    lock = warehouse.run_lock()
    lock.acquire()  # a writer: the read copy is replaced once the migration is committed
    try:
        with warehouse.connect() as con:  # a writable connection migrates in place
            version = current_version(con)
        warehouse.publish_read_copy()
    finally:
        lock.release()
    print(f"warehouse {warehouse.describe()}: schema version {version} (this code: {LATEST})")
    return EXIT_OK


def _migrate_to_lake(args) -> int:
    """Copy the file warehouse (migrated to this version first) into an empty DuckLake catalog, then
    compare every table's rows and checksum in the catalog as committed with the file's."""
    from consent.storage.ducklake import is_lake
    from consent.storage.move import MoveError, copy_tables, tally, verify
    from consent.storage.access import Warehouse

    source = _warehouse(args)
    if not is_lake(args.to):
        raise UsageError(f"--to: not a DuckLake catalog (ducklake:postgres:..., ducklake:sqlite:..., ducklake:<file>): {args.to}")
    if source.lake or not source.exists():
        raise UsageError(f"no warehouse file at {source.describe()} (--warehouse names the file to move)")
    target = Warehouse(path=args.to, data_path=args.data_path, lock_timeout_seconds=source.lock_timeout)
    lock = source.run_lock()
    lock.acquire()  # no run writes the file while it is copied
    try:
        with source.connect():
            pass  # an older file is migrated to this version first
        source.carry_salt_to(target)
        try:
            with target.connect() as con:
                con.execute(source._attach_sql(Path(source.file), "source", read_only=True))
                copied = copy_tables(con, "source", "warehouse")
                expected = [tally(con, "source", table) for table in copied]
            with target.connect(read_only=True) as con:  # a new connection: what the catalog committed
                verify(expected, [tally(con, "warehouse", table) for table in copied])
        except MoveError as exc:
            print(f"consent migrate: {exc}", file=sys.stderr)
            return EXIT_FAILED
    finally:
        lock.release()
    print(_table([("table", "rows", "checksum"), *[(t.table, t.rows, f"{t.checksum & 0xFFFFFFFF:08x} verified")
                                                   for t in expected]]))
    print(f"copied {source.describe()} into {target.describe()}: {len(expected)} tables, "
          f"{sum(t.rows for t in expected)} rows, every table verified")
    return EXIT_OK

