"""What every `consent` command shares: exit codes, the one-line usage error, the resources a
command's flags build, the warehouse file check, read-only queries, numbers and names given on the
command line, and the tables it prints.

Dagster-free: `sql`, `audit`, `export`, `runs`, `access`, `check` never import Dagster or GX.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from consent.domain.policy import ConfigError
from consent.storage.access import WarehouseAccess, access_from_env, parse_as_of

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# `consent check`: some audience rows may not be messaged (the others may).
EXIT_BLOCKED = 3


class UsageError(Exception):
    pass


def parse_at(value: str | None):
    """`--at`: the moment (UTC, naive; now when not given), or a one-line usage error."""
    try:
        return parse_as_of(value)
    except ValueError as exc:
        raise UsageError(f"--at: not an ISO 8601 timestamp: {value!r}") from exc


WAREHOUSE_HELP = ("DuckDB warehouse file, or a DuckLake catalog: ducklake:postgres:<libpq string>, ducklake:sqlite:<file>, "
                  "ducklake:<file> (default: CONSENT_WAREHOUSE or warehouse/consent.duckdb)")
DATA_PATH_HELP = ("where a DuckLake warehouse keeps its Parquet files: a folder or s3://bucket/prefix "
                  "(default: CONSENT_DATA_PATH; needed when the catalog is created)")
LOCK_HELP = "seconds to wait while another run writes (default: CONSENT_LOCK_TIMEOUT_SECONDS or 30)"


def add_command(sub, name: str, handler, summary: str, *examples: str) -> argparse.ArgumentParser:
    """A subcommand with its one-line description and its examples (`consent NAME --help` shows both)."""
    parser = sub.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".",
        epilog="example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler, examples=examples)
    return parser


def _resources(args, warn: bool = True, dagster: bool = False) -> dict:
    """The same resources every entry point builds, with this command's flags on top: Dagster's
    (`resources_from_env`) for a run, the plain ones (`access_from_env`, same settings) otherwise.
    `warn`: check the key against the file first (a key that does not fit: one line, exit 2,
    before anything is written). Only `consent run` says that the warehouse is not encrypted."""
    flags = vars(args)
    if dagster:
        from resources.warehouse import resources_from_env as build
    else:
        build = access_from_env
    resources = build(
        {
            "warehouse": {
                "path": flags.get("warehouse"), "data_path": flags.get("data_path"),
                "lock_timeout_seconds": flags.get("lock_timeout"),
                "alert_command": flags.get("alert_command"),
                "snapshot_retention_days": flags.get("retention_days"),
            },
            "settings": {
                "exports_dir": flags.get("exports"), "policy_file": flags.get("policy"), "as_of": flags.get("as_of"),
                "full": flags.get("full"), "reread": flags.get("reread"),
                "workers": flags.get("workers"), "buckets": flags.get("buckets"),
            },
        },
    )
    resources["warehouse"].setting("memory_limit")  # a bad CONSENT_MEMORY_LIMIT stops here, before any step
    exports = resources["settings"].exports_path
    if (flags.get("exports") or os.environ.get("CONSENT_EXPORTS")) and not exports.is_dir():
        raise UsageError(f"exports folder not found: {exports}")  # never a silent "no file holds the number"
    if not resources["warehouse"].lake:  # a DuckLake catalog is checked when it is attached
        _require_warehouse_file(Path(resources["warehouse"].file))
    if warn:
        resources["warehouse"].check_key()  # a key that does not fit the file: one true line (exit 2) before anything runs
    return resources


def _warn_if_unencrypted(warehouse: WarehouseAccess) -> None:
    """For the command that writes numbers into the warehouse (`run`), once: the others would repeat it."""
    warehouse.check_key()
    if not warehouse.key:
        print("consent: warning: CONSENT_WAREHOUSE_KEY is not set; the warehouse is not encrypted", file=sys.stderr)


# Every DuckDB database file, encrypted or not, carries this magic after its 8-byte checksum.
DUCKDB_MAGIC = b"DUCK"


def _require_warehouse_file(path: Path) -> None:
    """A --warehouse that exists but is no DuckDB database (a folder, an empty or a text file) is a
    usage error in one line, before any command opens it or a run writes beside it."""
    if path.is_dir():
        raise UsageError(f"the warehouse {path} is a folder, not a DuckDB database file (give the file, e.g. {path / 'consent.duckdb'})")
    if not path.is_file():
        return  # not there yet: a run creates it, a read command says there is no warehouse
    try:
        with path.open("rb") as handle:
            magic = handle.read(12)[8:12]
    except OSError as exc:
        raise UsageError(f"cannot read the warehouse {path}: {exc.strerror or exc}") from exc
    if magic != DUCKDB_MAGIC:
        what = "an empty file" if path.stat().st_size == 0 else "not a DuckDB database file"
        raise UsageError(f"the warehouse {path} is {what}; give a DuckDB warehouse file, or a new path for a run to create")


def _warehouse(args) -> WarehouseAccess:
    return _resources(args)["warehouse"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)



def _table(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(v).ljust(w) if i == 0 or not str(v).lstrip("-").isdigit() else str(v).rjust(w)
                  for i, (v, w) in enumerate(zip(r, widths)))
        for r in rows
    )


def read_only_query(warehouse: WarehouseAccess, query: str, params: dict | None = None,
                    hashing: bool = False, snapshot_time=None) -> tuple[list[str], list[tuple]]:
    """Columns and rows of one statement on a read-only connection to the read copy with no file
    access (`salted_hash()` only with `hashing`: the canned audits, never `consent sql`); with
    `snapshot_time`, a DuckLake warehouse as it stood then."""
    import duckdb

    params = {k: v for k, v in (params or {}).items() if f"${k}" in query}
    with warehouse.reader(hashing=hashing, snapshot_time=snapshot_time) as con:
        # Read-only attach refuses writes to the warehouse; this refuses COPY TO,
        # ATTACH and reading other files, and locks the settings.
        warehouse.allow_only_its_files(con)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            cursor = con.execute(query, params) if params else con.execute(query)
        except duckdb.Error as exc:
            message = duckdb_message(exc)
            if any(word in message.lower() for word in ("read-only", "read only", "permission", "external access")):
                raise UsageError(f"refused: the warehouse is read-only here; only queries run ({message})") from exc
            raise UsageError(f"SQL error: {message}") from exc
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()



def duckdb_message(exc: Exception) -> str:
    """DuckDB's error in one line: its first line and its hints ("Did you mean ...", "Candidate
    bindings: ..."), without the caret drawing under the statement."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    hints = [line for line in lines[1:] if line.startswith(HINTS)]
    return " ".join(lines[:1] + hints)


# The lines of a DuckDB error that tell the user what they meant.
HINTS = ("Did you mean", "Candidate")


def _print_rows(columns: list[str], rows: list[tuple], fmt: str, out=None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1), file=out)
    elif fmt == "csv":
        from consent.domain.csv_safe import write_csv

        write_csv(out, columns, rows)
    elif fmt == "txt":
        for row in rows:
            print(row[0], file=out)
    elif columns:
        print(_table([tuple(columns), *[tuple("" if v is None else v for v in r) for r in rows]]), file=out)


def _business_for(warehouse: WarehouseAccess, given: str | None) -> str:
    """The business a list or check is for: the one given, or the only one there is."""
    try:
        businesses = [b for (b,) in read_only_query(warehouse, "SELECT DISTINCT business FROM consent_status ORDER BY 1")[1]]
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    if given is None and len(businesses) > 1:
        raise UsageError(f"the warehouse holds {len(businesses)} businesses ({', '.join(businesses)}): "
                         "name the one the list is for with --business (consent is given to one business)")
    return given or (businesses[0] if businesses else "default")


def _require_known_names(args, warehouse: WarehouseAccess) -> None:
    """A misspelt --business or --purpose is an error (exit 2) naming the known ones, never an empty list.
    Known: the names the warehouse holds, the businesses of businesses.yaml, the policy's purposes."""
    from cli.names import unknown_name, warehouse_names

    with warehouse.reader() as con:
        known = warehouse_names(con)
    settings = _resources(args, warn=False)["settings"]
    try:
        known["business"].update(settings.load_channels().business_names())
        known["purpose"].update(settings.load_policy().purposes)
    except ConfigError:
        pass  # a broken configuration file does not hide the warehouse's own names
    for option, given, kind in (("--business", args.business, "business"), ("--purpose", args.purpose, "purpose")):
        message = unknown_name(option, given, known[kind]) if given is not None else None
        if message:
            raise UsageError(message)


def _contact(number: str, country: str | None) -> str:
    """An E.164 number (any spelling of it), or a business-scoped user ID as it is."""
    from consent.domain.events import BSUID, PARENT_BSUID
    from consent.domain.phones import normalise, wa_id_to_raw

    if BSUID.fullmatch(number.strip()) or PARENT_BSUID.fullmatch(number.strip()):
        return number.strip()
    result = normalise(wa_id_to_raw(number) if number.strip().isdigit() and not country else number, country)
    if not result.is_valid:
        raise UsageError(f"not a valid phone number: {result.invalid_reason}")
    return result.phone_e164

