"""`consent sql`: one read-only statement on the warehouse's read copy."""

from __future__ import annotations

from cli.common import EXIT_OK, LOCK_HELP, WAREHOUSE_HELP, UsageError, _print_rows, _warehouse, add_command, parse_at, read_only_query


def register(sub) -> None:
    sql = add_command(
        sub, "sql", command_sql, "run read-only SQL against the warehouse",
        "consent sql \"SELECT business, purpose, status, count(*) FROM consent_status GROUP BY ALL\"",
        "consent sql \"SELECT * FROM consent_daily\" --format csv",
    )
    sql.add_argument("query", nargs="?",
                     help="one SQL statement; without it, DuckDB's shell on the read copy, read-only (SQL from a pipe too)")
    sql.add_argument("--warehouse", help=WAREHOUSE_HELP)
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table", help="how rows are printed")
    sql.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    sql.add_argument("--at", help="DuckLake only: the warehouse as it stood at this moment, its snapshot then "
                                  "(ISO 8601, UTC if no offset; within the snapshot retention)")


def command_sql(args) -> int:
    snapshot_time = _snapshot_time(args)
    if args.query is None:
        from cli.sql_shell import ShellUnavailable, open_shell

        try:
            return open_shell(_warehouse(args))
        except (ShellUnavailable, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from exc
    try:
        columns, rows = read_only_query(_warehouse(args), args.query, snapshot_time=snapshot_time)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    _print_rows(columns, rows, args.format)
    return EXIT_OK



def _snapshot_time(args):
    """--at: the moment whose DuckLake snapshot the statement reads (None: the latest)."""
    if args.at is None:
        return None
    at = parse_at(args.at)
    if args.query is None:
        raise UsageError("--at needs a statement (the shell opens the latest snapshot)")
    if not _warehouse(args).lake:
        raise UsageError("--at: a file warehouse keeps no snapshots; the status at a moment is in "
                         "consent_status_history (valid_from <= T < valid_to), or `consent export --at`")
    return at
