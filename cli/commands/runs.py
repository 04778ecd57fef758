"""`consent runs`: the last runs, as the warehouse recorded them."""

from __future__ import annotations

from cli.common import EXIT_OK, WAREHOUSE_HELP, UsageError, _table, _warehouse, add_command


def register(sub) -> None:
    runs = add_command(sub, "runs", command_runs, "print the last runs", "consent runs --limit 5")
    runs.add_argument("--warehouse", help=WAREHOUSE_HELP)
    runs.add_argument("--limit", type=int, default=10, help="how many runs, newest first")


def command_runs(args) -> int:
    warehouse = _warehouse(args)
    try:
        with warehouse.reader() as con:
            rows = con.execute(
                """
                SELECT left(run_id, 8), mode, strftime(as_of, '%Y-%m-%d %H:%M'), status, files_read, rows_read,
                       new_events, quarantined, round(epoch(finished_at - started_at), 1), array_to_string(checks_failed, ',')
                FROM runs ORDER BY started_at DESC LIMIT ?
                """,
                [args.limit],
            ).fetchall()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    print(_table([("run", "mode", "as of", "status", "files", "rows", "new events", "quarantined", "seconds", "failed checks"),
                  *[tuple("" if v is None else v for v in r) for r in rows]]))
    return EXIT_OK

