"""`consent maintain`: the storage's upkeep, as the `warehouse_maintenance` job does it."""

from __future__ import annotations

from cli.common import EXIT_OK, LOCK_HELP, WAREHOUSE_HELP, UsageError, _warehouse, add_command


def register(sub) -> None:
    maintain = add_command(
        sub, "maintain", command_maintain,
        "on DuckLake, merge small files, expire snapshots older than the retention and delete the files no kept "
        "snapshot refers to; checkpoint a file warehouse",
        "consent maintain --warehouse ducklake:sqlite:warehouse/catalog.sqlite --retention-days 90",
    )
    maintain.add_argument("--warehouse", help=WAREHOUSE_HELP)
    maintain.add_argument("--retention-days", dest="retention_days", type=int,
                          help="keep the snapshots of this many days (default: CONSENT_SNAPSHOT_RETENTION_DAYS, else 30)")
    maintain.add_argument("--lock-timeout", type=float, help=LOCK_HELP)


def command_maintain(args) -> int:
    from consent.storage.maintenance import maintain

    if args.retention_days is not None and args.retention_days < 0:
        raise UsageError(f"--retention-days: not a whole number of days (0 or more): {args.retention_days}")
    warehouse = _warehouse(args)
    if not warehouse.exists():
        raise UsageError(f"no warehouse at {warehouse.describe()}")
    lock = warehouse.run_lock()
    lock.acquire()  # a writer: no run meanwhile on a file warehouse
    try:
        done = maintain(warehouse)
        warehouse.publish_read_copy()
    finally:
        lock.release()
    print(f"warehouse {warehouse.describe()} ({done.storage}):")
    for line in done.lines:
        print(f"  {line}")
    return EXIT_OK
