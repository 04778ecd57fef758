"""`consent sql`: one read-only statement on the warehouse's read copy."""

from __future__ import annotations

from cli.common import EXIT_OK, LOCK_HELP, WAREHOUSE_HELP, UsageError, _print_rows, _warehouse, add_command, read_only_query


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


def command_sql(args) -> int:
    if args.query is None:
        from cli.sql_shell import ShellUnavailable, open_shell

        try:
            return open_shell(_warehouse(args))
        except (ShellUnavailable, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from exc
    try:
        columns, rows = read_only_query(_warehouse(args), args.query)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    _print_rows(columns, rows, args.format)
    return EXIT_OK

