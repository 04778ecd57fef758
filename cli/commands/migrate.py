"""`consent migrate`: bring an older warehouse to this version's schema, in place."""

from __future__ import annotations

from pathlib import Path

from cli.common import EXIT_OK, LOCK_HELP, WAREHOUSE_HELP, UsageError, _warehouse, add_command
from consent.storage.access import RunLock


def register(sub) -> None:
    migrate = add_command(
        sub, "migrate", command_migrate, "migrate the warehouse to this version's schema, in place",
        "consent migrate --warehouse warehouse/consent.duckdb",
    )
    migrate.add_argument("--warehouse", help=WAREHOUSE_HELP)
    migrate.add_argument("--lock-timeout", type=float, help=LOCK_HELP)


def command_migrate(args) -> int:
    from consent.storage.migrations import LATEST, current_version

    warehouse = _warehouse(args)
    if not Path(warehouse.file).exists():
        raise UsageError(f"no warehouse at {warehouse.file}")
    lock = RunLock(Path(warehouse.file), warehouse.lock_timeout)
    lock.acquire()  # a writer: the read copy is replaced once the migration is committed
    try:
        with warehouse.connect() as con:  # a writable connection migrates in place
            version = current_version(con)
        warehouse.publish_read_copy()
    finally:
        lock.release()
    print(f"warehouse {warehouse.file}: schema version {version} (this code: {LATEST})")
    return EXIT_OK

