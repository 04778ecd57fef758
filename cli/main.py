"""`consent`: run the nightly job in-process and read the warehouse.

Exit codes: 0 success; 1 the run failed or an ERROR-severity check failed
(opt-outs are published all the same); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from consent.storage.migrations import WarehouseOutdated
from consent.domain.policy import ConfigError
from consent.run.alerts import raise_alert
# Dagster-free: `sql`, `audit`, `export`, `runs`, `access`, `check` never import Dagster or GX.
from consent.storage.access import (
    REPO_ROOT,
    RunLock,
    SettingsAccess,
    WarehouseAccess,
    WarehouseKeyError,
    WarehouseLocked,
    owner_only_file,
    access_from_env,
    owner_only,
    parse_as_of,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# `consent check`: some audience rows may not be messaged (the others may).
EXIT_BLOCKED = 3


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no traceback
        raise UsageError(message)


WAREHOUSE_HELP = "DuckDB warehouse file (default: CONSENT_WAREHOUSE or warehouse/consent.duckdb)"
LOCK_HELP = "seconds to wait while another run writes (default: CONSENT_LOCK_TIMEOUT_SECONDS or 30)"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="consent", description="WhatsApp consent warehouse.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="ingest new exports, publish the ledger, reconcile consent status")
    run.add_argument("--exports", help="exports folder, one subfolder per channel (default: CONSENT_EXPORTS or sample_exports)")
    run.add_argument("--warehouse", help=WAREHOUSE_HELP)
    run.add_argument("--as-of", dest="as_of", help="fix 'now' (ISO 8601, UTC if no offset)")
    run.add_argument("--policy", help="policy YAML (default: CONSENT_POLICY, or policy.yaml in the exports folder, if any)")
    run.add_argument("--full", action="store_true", help="rebuild every status from the ledger")
    run.add_argument("--reread", action="store_true",
                     help="read every export file again from scratch (what the ledger holds is not added twice)")
    run.add_argument("--workers", type=int, help="processes for phone normalisation (default: CONSENT_WORKERS or up to 2)")
    run.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    run.add_argument(
        "--alert-command",
        help="command given the run summary as JSON on stdin when the run or an ERROR check fails (default: CONSENT_ALERT_COMMAND)",
    )
    sql = sub.add_parser("sql", help="run read-only SQL against the warehouse")
    sql.add_argument("query", help="one SQL statement")
    sql.add_argument("--warehouse", help=WAREHOUSE_HELP)
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    erase = sub.add_parser("erase", help="erase a number everywhere (GDPR Art. 17), keeping a salted hash")
    erase.add_argument("number", help="the number in any spelling")
    erase.add_argument("--country", help="ISO 3166 region for a national spelling")
    erase.add_argument("--warehouse", help=WAREHOUSE_HELP)
    erase.add_argument("--exports", help="exports folder to list files still holding the number (default: CONSENT_EXPORTS)")
    erase.add_argument("--reason", default="erasure request (GDPR Art. 17)")
    erase.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    access = sub.add_parser("access", help="write every event, status and evidence of a number as JSON (GDPR Art. 15)")
    access.add_argument("number", help="the number in any spelling")
    access.add_argument("--country", help="ISO 3166 region for a national spelling")
    access.add_argument("--warehouse", help=WAREHOUSE_HELP)
    access.add_argument("--out", help="JSON file to write (default: access_<hash>.json in the warehouse folder)")
    audit = sub.add_parser("audit", help="run a canned audit (audits/*.sql); without NAME, list them")
    audit.add_argument("name", nargs="?", help="audit name, e.g. evidence, violations")
    audit.add_argument("args", nargs="*", help="the audit's arguments (e.g. a NUMBER)")
    audit.add_argument("--country", help="ISO 3166 region for a national spelling of NUMBER")
    audit.add_argument("--hash", dest="contact_hash", metavar="HASH",
                       help="evidence only: the contact whose salted hash this is (as the dashboard and marts show it); "
                            "numbers and BSUIDs in the output are masked")
    audit.add_argument("--warehouse", help=WAREHOUSE_HELP)
    audit.add_argument("--format", choices=("table", "csv", "json"), default="table")
    export = sub.add_parser("export", help="write the sendable list of a purpose, or the suppression list")
    export.add_argument("--purpose", help="purpose of the sendable list (or filter of the suppression list)")
    export.add_argument("--suppression", action="store_true", help="numbers opted out (for upload to a provider)")
    export.add_argument("--format", choices=("txt", "csv", "json"),
                        help="default: txt (one contact per line: E.164, or the BSUID of a contact without a number); "
                             "csv for --suppression")
    export.add_argument("--business", help="the business the list is for (required when the warehouse holds several)")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.add_argument("--warehouse", help=WAREHOUSE_HELP)
    export.add_argument("--renewal-due", dest="renewal_due", action="store_true",
                        help="contacts whose consent for --purpose lapses within the policy's renewal_notice_days")
    export.add_argument("--policy", help="policy YAML for --renewal-due (default: CONSENT_POLICY, or the exports folder's)")
    export.add_argument("--exports", help="exports folder whose policy.yaml applies to --renewal-due (default: CONSENT_EXPORTS)")
    export.add_argument("--at", help="--renewal-due as of this moment (ISO 8601, UTC if no offset; default: now)")
    check = sub.add_parser(
        "check", help="decide, row by row, whether an audience may be messaged (exit 0: all may; 3: some blocked)")
    check.add_argument("audience", help="CSV with a `phone` column (any spelling) and/or `whatsapp_user_id`; other columns kept")
    check.add_argument("--purpose", required=True, help="what the campaign sends, e.g. marketing")
    check.add_argument("--business", help="the business that sends (required when the warehouse holds several)")
    check.add_argument("--at", help="decide as of this moment (ISO 8601, UTC if no offset; default: now)")
    check.add_argument("--default-region", dest="default_region", help="ISO 3166 region for national spellings without `country`")
    check.add_argument("--out", help="file for the audience with its decisions (default: standard output)")
    check.add_argument("--format", choices=("csv", "json"), default="csv")
    check.add_argument("--warehouse", help=WAREHOUSE_HELP)
    check.add_argument("--policy", help="policy YAML (validity, renewal notice; default: CONSENT_POLICY, or the exports folder's)")
    check.add_argument("--exports", help="exports folder (for its policy.yaml; default: CONSENT_EXPORTS)")
    check.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    runs = sub.add_parser("runs", help="print the last runs")
    runs.add_argument("--warehouse", help=WAREHOUSE_HELP)
    runs.add_argument("--limit", type=int, default=10)
    migrate = sub.add_parser("migrate", help="migrate the warehouse to this version's schema, in place")
    migrate.add_argument("--warehouse", help=WAREHOUSE_HELP)
    migrate.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    sub.add_parser("rules", help="list the consent rules (the registry): severity, refuses consent, time-dependent")
    hashed = sub.add_parser("hash", help="print the salted hash of one number or BSUID, as marts, audits and the suppression list hold it")
    hashed.add_argument("number", help="the number in any spelling, or a BSUID")
    hashed.add_argument("--country", help="ISO 3166 region for a national spelling")
    hashed.add_argument("--warehouse", help=WAREHOUSE_HELP)
    return parser


def _resources(args, warn: bool = True, dagster: bool = False) -> dict:
    """The same resources every entry point builds, with this command's flags on top: Dagster's
    (`resources_from_env`) for a run, the plain ones (`access_from_env`, same settings) otherwise."""
    flags = vars(args)
    if dagster:
        from resources.warehouse import resources_from_env as build
    else:
        build = access_from_env
    resources = build(
        {
            "warehouse": {
                "path": flags.get("warehouse"), "lock_timeout_seconds": flags.get("lock_timeout"),
                "alert_command": flags.get("alert_command"),
            },
            "settings": {
                "exports_dir": flags.get("exports"), "policy_file": flags.get("policy"), "as_of": flags.get("as_of"),
                "full": flags.get("full"), "reread": flags.get("reread"),
                "workers": flags.get("workers"),
            },
        },
    )
    resources["warehouse"].setting("memory_limit")  # a bad CONSENT_MEMORY_LIMIT stops here, before any step
    if warn:
        _warn_if_unencrypted(resources["warehouse"])
    return resources


def _warn_if_unencrypted(warehouse: WarehouseAccess) -> None:
    warehouse.check_key()  # a key that does not fit the file: one true line (exit 2) before anything runs
    if not warehouse.key:
        print("consent: warning: CONSENT_WAREHOUSE_KEY is not set; the warehouse is not encrypted", file=sys.stderr)


def _warehouse(args) -> WarehouseAccess:
    return _resources(args)["warehouse"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _validate_inputs(settings: SettingsAccess) -> None:
    exports = settings.exports_path
    if not exports.is_dir():
        raise UsageError(f"exports folder not found: {exports}")
    if settings.setting("policy_file") and not settings.policy_path.exists():
        raise UsageError(f"policy file not found: {settings.policy_path}")
    settings.load_policy()
    settings.load_channels()
    try:
        settings.run_clock()
    except ValueError as exc:
        raise UsageError(f"--as-of: not an ISO 8601 timestamp: {settings.as_of!r}") from exc
    if settings.worker_count < 1:
        raise UsageError("--workers must be at least 1")


def command_run(args) -> int:
    """Launch `consent_job` in-process, then print what the run recorded (the job finalises itself)."""
    resources = _resources(args, warn=False, dagster=True)
    _validate_inputs(resources["settings"])
    _warn_if_unencrypted(resources["warehouse"])
    # Dagster is imported only when a run starts: `consent --help` stays fast.
    from pipelines.definitions import build_definitions
    from consent.run.progress import set_console

    defs = build_definitions(resources)
    set_console(_stderr)
    try:
        result = defs.resolve_job_def("consent_job").execute_in_process(
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
    finally:
        set_console(None)
    return _report(resources["warehouse"], result)


def _report(warehouse: WarehouseAccess, result) -> int:
    summary = _recorded(warehouse, result.run_id)
    disk_full = _report_disk_full(warehouse, result, summary)
    if disk_full is not None:
        return disk_full
    if not summary.get("finished"):
        return _report_unfinished(warehouse, result, summary)
    for reason in filter(None, (summary.get("failure_reason") or "").split("; ")):
        print(f"consent run: {reason}", file=sys.stderr)
    if summary["published"]:
        _print_summary(warehouse, result.run_id)
    dashboard = Path(warehouse.file).resolve().parent / "dashboard.html"
    if dashboard.exists():
        print(f"dashboard: {dashboard}")
    _print_checks(summary["check_outcomes"])
    from expectations.runner import docs_folder

    docs = docs_folder(warehouse.file, result.run_id) / "index.html"
    if docs.exists():
        print(f"data docs: {docs}")
    if summary["status"] != "failed":
        print("run succeeded")
        return EXIT_OK
    for alert in sorted((Path(warehouse.file).resolve().parent / "alerts").glob(f"*-{result.run_id[:8]}*.json")):
        print(f"alert written to {alert}")
    if summary.get("failure_reason"):
        print("run FAILED: a step failed; nothing of this run was published past that step.")
    else:
        print("run FAILED: an ERROR check failed; opt-outs of this run are published, "
              "opt-ins without evidence are not opted in.")
    return EXIT_FAILED


def _report_disk_full(warehouse: WarehouseAccess, result, summary: dict) -> int | None:
    """A full disk ends the run in one line: where it struck, and the alert (or why there is none).
    None when the disk was not full. Each step commits or rolls back whole, so the warehouse holds
    what the last commit wrote."""
    from consent.storage.faults import is_disk_full

    reasons = [r for r in (summary.get("failure_reason") or "").split("; ") if r] + _failure_messages(result)
    full = [r for r in reasons if is_disk_full(r)]
    if not full and not is_disk_full(summary.get("warehouse_error") or ""):
        return None
    places = [re.split(r" (?:failed|not written): ", r)[0] for r in full if re.search(r" (?:failed|not written): ", r)]
    where = ", ".join(dict.fromkeys(places)) or "finishing the run"
    run_id = result.run_id
    alerts = sorted((Path(warehouse.file).resolve().parent / "alerts").glob(f"*-{run_id[:8]}*.json"))
    if alerts:
        said = f"alert written to {alerts[-1]}"
    else:
        summary.update(run_id=run_id, status="failed", reason="; ".join(full or reasons))
        try:
            said = f"alert written to {raise_alert(summary, warehouse.file, warehouse.alert)}"
        except OSError as exc:
            said = f"the alert could not be written either ({exc.strerror or exc})"
    _stderr(f"consent run: FAILED, the disk is full ({where}); nothing past the last commit was written; {said}")
    return EXIT_FAILED


def _recorded(warehouse: WarehouseAccess, run_id: str) -> dict:
    from consent.run.runs import run_summary

    try:
        with warehouse.reader() as con:
            return run_summary(con, run_id)
    except (FileNotFoundError, WarehouseLocked, WarehouseKeyError, WarehouseOutdated) as exc:
        return {"run_id": run_id, "published": False, "warehouse_error": str(exc)}


def _report_unfinished(warehouse: WarehouseAccess, result, summary: dict) -> int:
    """The run died before it could record its end (lock, key, schema): say why and alert from here."""
    reasons = _failure_messages(result)
    for reason in reasons:
        print(f"consent run: {reason}", file=sys.stderr)
    summary.update(status="failed", reason="; ".join(reasons))
    alert = raise_alert(summary, warehouse.file, warehouse.alert)
    print(f"consent run: alert written to {alert}", file=sys.stderr)
    return EXIT_FAILED


def _print_checks(outcomes: dict) -> None:
    """Failed checks as the run recorded them: errors, then warnings, with failing rows' lineage."""
    failed = [(key, o) for key, o in outcomes.items() if not o["passed"]]
    for label, severity in (("FAILED (error)", "ERROR"), ("warning", "WARN")):
        for key, outcome in failed:
            if outcome["severity"] != severity:
                continue
            print(f"check {label}: {key}")
            for name, value in (outcome.get("metadata") or {}).items():
                if name.startswith(("error:", "warn:")) or name in ("violations", "files_not_conserved", "notices_refused"):
                    print(f"    {name}: {_short(value)}")


def _failure_messages(result) -> list[str]:
    """One line per error of a failed run (step failures, resource set-up failures), deduplicated."""
    from resources.finalise import root_message

    messages: list[str] = []
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is None:
            continue
        where = f"step {event.step_key} failed: " if event.step_key else ""
        message = where + root_message(error)
        if message not in messages:
            messages.append(message)
    return messages or ["run failed"]


def _short(value, limit: int = 400) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + " ..."


def _print_summary(warehouse: WarehouseAccess, run_id: str) -> None:
    with warehouse.reader() as con:
        _print_run(con, run_id)


def _print_run(con, run_id: str) -> None:
    row = con.execute(
        "SELECT mode, as_of, per_channel, new_events, contacts_reconciled FROM runs WHERE run_id = ?", [run_id]
    ).fetchone()
    mode, as_of, per_channel, new_events, contacts = row
    per_channel = json.loads(per_channel)
    print(f"run {run_id[:8]} ({mode}, as of {as_of} UTC)")
    header = ("channel", "files", "read", "rows read", "events", "new", "quarantined", "skipped")
    lines = [header]
    for channel, c in per_channel.items():
        lines.append((channel, c.get("files_seen", 0), c.get("files_read", 0), c.get("rows_read") or 0,
                      c.get("events") or 0, c.get("new_events", 0), c.get("quarantined") or 0, c.get("skipped") or 0))
    totals = ["total"] + [sum(int(l[i]) for l in lines[1:]) for i in range(1, len(header))]
    lines.append(tuple(totals))
    print(_table(lines))
    print(f"new events: {new_events}; contacts reconciled: {contacts}")
    for channel, source_file, notes in con.execute(
        "SELECT channel, source_file, notes FROM stg_source_files WHERE len(notes) > 0 ORDER BY ALL"
    ).fetchall():
        for note in notes:
            print(f"note: {source_file}: {note}")
    for (ignored,) in con.execute("SELECT unnest(ignored) FROM stg_run").fetchall():
        print(f"note: ignored {ignored}")
    statuses = con.execute(
        "SELECT business, purpose, status, count(*) FROM consent_status GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    if statuses:
        print("consent status (all contacts, per business):")
        print(_table([("business", "purpose", "status", "contacts"), *statuses]))


def _table(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(v).ljust(w) if i == 0 or not str(v).lstrip("-").isdigit() else str(v).rjust(w)
                  for i, (v, w) in enumerate(zip(r, widths)))
        for r in rows
    )


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


def read_only_query(warehouse: WarehouseAccess, query: str, params: dict | None = None,
                    hashing: bool = False) -> tuple[list[str], list[tuple]]:
    """Columns and rows of one statement on a read-only connection to the read copy with no file
    access (`salted_hash()` only with `hashing`: the canned audits, never `consent sql`)."""
    import duckdb

    params = {k: v for k, v in (params or {}).items() if f"${k}" in query}
    with warehouse.reader(hashing=hashing) as con:
        # Read-only attach refuses writes to the warehouse; this refuses COPY TO,
        # ATTACH and reading other files, and locks the settings.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            cursor = con.execute(query, params) if params else con.execute(query)
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            if any(word in message.lower() for word in ("read-only", "read only", "permission", "external access")):
                raise UsageError(f"refused: the warehouse is read-only here; only queries run ({message})") from exc
            raise UsageError(f"SQL error: {message}") from exc
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()


def command_sql(args) -> int:
    try:
        columns, rows = read_only_query(_warehouse(args), args.query)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    _print_rows(columns, rows, args.format)
    return EXIT_OK


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


AUDITS = REPO_ROOT / "audits"


def _audit_header(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    purpose = lines[0].split(":", 1)[1].strip() if lines and ":" in lines[0] else ""
    args = next((l.split(":", 1)[1].split() for l in lines[1:3] if l.startswith("-- args:")), [])
    return purpose, args


def _evidence_by_hash(args, audit: Path) -> int:
    """`consent audit evidence --hash H`: the evidence of the contact a dashboard or mart shows by its
    hash; every text value masked (`redact`), so the number or BSUID behind the hash is never printed."""
    from consent.domain.redact import redact

    given = args.contact_hash.strip().lower()
    if audit.stem != "evidence" or args.args:
        raise UsageError("--hash goes with the evidence audit alone: consent audit evidence --hash HASH")
    warehouse = _warehouse(args)
    try:
        _, found = read_only_query(warehouse, (AUDITS / "by_hash" / "contact.sql").read_text(encoding="utf-8"),
                                   {"hash": given}, hashing=True)
        if not found:
            raise UsageError(f"no contact in the warehouse has the hash {given!r}")
        columns, rows = read_only_query(warehouse, audit.read_text(encoding="utf-8"), {"phone": found[0][0]}, hashing=True)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    # a WhatsApp message id encodes the sender's number (base64): masked like a number
    mask = lambda v: re.sub(r"wamid\.[A-Za-z0-9+/=_-]+", "wamid.[masked]", redact(v)) if isinstance(v, str) else v  # noqa: E731
    rows = [tuple(mask(v) for v in row) for row in rows]
    if args.format == "table":
        print(f"# evidence of contact {given}: {_audit_header(audit)[0]} ({len(rows)} rows; numbers masked)")
    _print_rows(columns, rows, args.format)
    return EXIT_OK


def command_audit(args) -> int:
    available = {p.stem: p for p in sorted(AUDITS.glob("*.sql"))}
    if args.name in (None, "list"):
        for name, path in available.items():
            purpose, needed = _audit_header(path)
            print(f"{name} {' '.join(needed)}".ljust(36) + purpose)
        return EXIT_OK
    if args.name not in available:
        raise UsageError(f"unknown audit {args.name!r}; available: {', '.join(available)}")
    if args.contact_hash is not None:
        return _evidence_by_hash(args, available[args.name])
    purpose, needed = _audit_header(available[args.name])
    if len(args.args) != len(needed):
        raise UsageError(f"audit {args.name} takes {' '.join(needed) or 'no arguments'}")
    warehouse = _warehouse(args)
    params = {}
    for name, value in zip(needed, args.args):
        params["phone" if name == "NUMBER" else name.lower()] = _contact(value, args.country) if name == "NUMBER" else value
    try:
        columns, rows = read_only_query(warehouse, available[args.name].read_text(encoding="utf-8"), params, hashing=True)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    if args.format == "table":
        print(f"# {args.name}: {purpose} ({len(rows)} rows)")
    _print_rows(columns, rows, args.format)
    return EXIT_OK


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


def _say_if_empty(rows: list, args, business: str) -> None:
    """An empty sendable or suppression list is legal, and worth one line: it suppresses or reaches nobody."""
    if rows:
        return
    what = "suppression list" if args.suppression else "sendable list"
    scope = f"{business}" + (f", purpose {args.purpose}" if args.purpose else "")
    print(f"consent export: warning: the {what} of {scope} is empty (0 contacts)", file=sys.stderr)


def command_export(args) -> int:
    warehouse = _warehouse(args)
    business = _business_for(warehouse, args.business)
    _require_known_names(args, warehouse)
    if args.renewal_due:
        return _export_renewals(args, warehouse, business)
    # A contact is named by number, by BSUID, or both (a contact known only by BSUID has no number).
    if args.suppression:
        where = "business = $business AND status = 'opted_out'" + (" AND purpose = $purpose" if args.purpose else "")
        query = ("SELECT phone_e164, whatsapp_user_id, business, purpose, opted_out_at, opt_out_channel "
                 f"FROM consent_status WHERE {where} ORDER BY ALL")
    else:
        if not args.purpose:
            raise UsageError("export needs --purpose (the sendable list) or --suppression")
        query = ("SELECT phone_e164, whatsapp_user_id FROM consent_status "
                 "WHERE business = $business AND purpose = $purpose AND sendable ORDER BY contact_id")
    fmt = args.format or ("csv" if args.suppression else "txt")
    if fmt == "txt":
        query = query.replace("SELECT phone_e164, whatsapp_user_id", "SELECT coalesce(phone_e164, whatsapp_user_id) AS contact", 1)
    try:
        columns, rows = read_only_query(warehouse, query, {"purpose": args.purpose, "business": business})
        erased = read_only_query(warehouse, "SELECT count(*) FROM suppression_list")[1][0][0] if args.suppression else 0
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    _write_list(columns, rows, fmt, args.out, f"contacts of {business}")
    _say_if_empty(rows, args, business)
    if erased:
        print(f"note: {erased} erased identifiers are on the suppression list as salted hashes only; "
              "they are kept out of every import and cannot be exported", file=sys.stderr)
    return EXIT_OK


def _export_renewals(args, warehouse: WarehouseAccess, business: str) -> int:
    """Contacts opted in for the purpose whose consent lapses within renewal_notice_days: re-ask them."""
    if not args.purpose:
        raise UsageError("export --renewal-due needs --purpose")
    policy = _resources(args, warn=False)["settings"].load_policy()
    if not policy.consent_expires:
        raise UsageError("the policy sets no consent_validity_days: no consent lapses")
    from consent.sending.gate import OPTED_IN_AT, RENEWAL_COLUMNS, renewals_due

    try:
        at = parse_as_of(args.at)
    except ValueError as exc:
        raise UsageError(f"--at: not an ISO 8601 timestamp: {args.at!r}") from exc
    _, rows = read_only_query(warehouse, OPTED_IN_AT, {"business": business, "purpose": args.purpose, "at": at})
    due, columns = renewals_due(rows, policy, args.purpose, at), list(RENEWAL_COLUMNS)
    _write_list(columns, due, args.format or "csv", args.out, f"contacts of {business} due for renewal")
    return EXIT_OK


def _write_list(columns: list[str], rows: list[tuple], fmt: str, out: str | None, what: str) -> None:
    """An exported list to `out` (saying how many rows went there) or to standard output."""
    if out:
        with open(out, "w", encoding="utf-8", newline="") as handle:
            _print_rows(columns, rows, fmt, handle)
        print(f"wrote {len(rows)} {what} to {out}", file=sys.stderr)
    else:
        _print_rows(columns, rows, fmt)


def command_check(args) -> int:
    from consent.sending.gate import AudienceError, decide, read_audience, record_check, summary, write_decisions
    resources = _resources(args, warn=False)
    warehouse, settings = resources["warehouse"], resources["settings"]
    if not Path(warehouse.file).exists():
        raise UsageError(f"no warehouse at {warehouse.file}")
    with warehouse.connect():
        pass  # a writing command: an older warehouse is migrated first
    business = _business_for(warehouse, args.business)
    _require_known_names(args, warehouse)
    try:
        at = parse_as_of(args.at)
    except ValueError as exc:
        raise UsageError(f"--at: not an ISO 8601 timestamp: {args.at!r}") from exc
    try:
        audience = read_audience(Path(args.audience))
    except AudienceError as exc:
        raise UsageError(str(exc)) from exc
    policy = settings.load_policy()
    lock = RunLock(Path(warehouse.file), warehouse.lock_timeout)
    lock.acquire()  # the check is logged in the warehouse: one writer at a time
    try:
        with warehouse.connect() as con:
            sql_salt = warehouse.salt()
            decided = decide(con, audience, purpose=args.purpose, business=business, at=at, policy=policy,
                             default_region=args.default_region, workers=settings.worker_count)
            check_id = record_check(con, decided, audience, purpose=args.purpose, business=business, at=at, salt=sql_salt)
        warehouse.publish_read_copy()
    finally:
        lock.release()
    if args.out:
        write_decisions(decided, args.out, args.format)
    else:
        write_decisions(decided, sys.stdout, args.format)
    counts = summary(decided)
    sendable = int((decided["decision"] == "send").sum())
    report = sys.stderr
    print(f"check {check_id[:12]}: {audience.name} for {args.purpose} at {business}, as of {at.isoformat(sep=' ')} UTC: "
          f"{sendable} of {decided.height} rows may be sent to", file=report)
    print(_table([("reason", "rows"), *counts.items()]), file=report)
    if args.out:
        print(f"wrote {decided.height} rows with their decisions to {args.out}", file=report)
    return EXIT_OK if sendable == decided.height else EXIT_BLOCKED


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


def command_erase(args) -> int:
    from datetime import datetime, timezone

    from consent.privacy.erasure import erase, files_containing, scrub_warehouse_files
    phone = _contact(args.number, args.country)
    resources = _resources(args)
    warehouse, exports = resources["warehouse"], resources["settings"].exports_path
    if not Path(warehouse.file).exists():
        raise UsageError(f"no warehouse at {warehouse.file}")
    lock = RunLock(Path(warehouse.file), warehouse.lock_timeout)
    lock.acquire()  # no run may publish while the number is being erased
    try:
        with warehouse.connect() as con:
            report = erase(con, phone, warehouse.salt(), datetime.now(timezone.utc).replace(tzinfo=None), args.reason)
        # Deleted rows can linger in freed blocks: rewrite the file so no byte of the number is left.
        warehouse.compact()
        # Access reports this tool wrote for the number are files the warehouse keeps too.
        folder = Path(warehouse.file).resolve().parent
        for old_report in folder.glob(f"access_{report.phone_hash[:12]}.json"):
            old_report.unlink()
        # Alerts, Data Docs, the dashboard, other reports: whatever else the warehouse wrote.
        database = Path(warehouse.file).resolve()
        files = scrub_warehouse_files(folder, report.identifiers or [phone],
                                      keep={*folder.glob(database.name + "*"), warehouse.read_copy})
        warehouse.publish_read_copy()  # readers see the number gone as soon as the erasure ends
    finally:
        lock.release()
    report.files_still_containing = sorted({f for i in report.identifiers or [phone] for f in files_containing(exports, i)})
    print(f"erased contact {report.phone_hash} (salted hash, now on the suppression list)")
    for key, value in report.__dict__.items():
        if key not in ("phone_hash", "files_still_containing", "identifiers"):
            print(f"  {key.replace('_', ' ')}: {value}")
    for done, names in files.items():
        for name in names:
            print(f"  warehouse file {done} (it held the number): {name}")
    if report.files_still_containing:
        print("export files outside the warehouse that still contain the number (delete or redact them):")
        for name in report.files_still_containing:
            print(f"  {exports / name}")
    return EXIT_OK


def command_access(args) -> int:
    from consent.privacy.erasure import access_report, phone_hash

    phone = _contact(args.number, args.country)
    warehouse = _warehouse(args)
    try:
        with warehouse.reader() as con:
            report = access_report(con, phone, warehouse.salt())
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    out = Path(args.out) if args.out else Path(warehouse.file).resolve().parent / f"access_{phone_hash(phone, warehouse.salt())[:12]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    owner_only_file(out)  # created owner-only (see main); one written by older code is closed too
    print(f"wrote {out}: {len(report['consent_events'])} events, {len(report['consent_status'])} statuses, "
          f"{len(report['consent_violations'])} violations, {len(report['quarantine'])} quarantined rows")
    return EXIT_OK


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


def command_rules(args) -> int:
    from consent.domain.rules import RULES

    rows = [("rule", "default severity", "refuses consent", "time-dependent", "what it means")]
    for rule in RULES.values():
        refuses = "policy" if rule.refuses is None else ("yes" if rule.refuses else "no")
        timed = ("once its date is reached" if rule.until_dated else "yes") if rule.time_dependent else "no"
        rows.append((rule.name, rule.severity, refuses, timed, rule.description))
    print(_table(rows))
    return EXIT_OK


def command_hash(args) -> int:
    """The salted hash of one number or BSUID: how an auditor finds a person in the marts, audits
    and the suppression list without any SQL reader holding the salt."""
    from consent.domain.hashing import phone_hash

    contact = _contact(args.number, args.country)
    salt = _resources(args, warn=False)["warehouse"].salt(create=False)
    if not salt:
        raise UsageError("no hash salt yet: set CONSENT_HASH_SALT, or run once (it is kept beside the warehouse)")
    print(phone_hash(contact, salt))
    return EXIT_OK


# Commands that write numbers to files (`--out`, access reports): created readable by their owner only.
WRITES_NUMBERS = ("export", "check", "access")


def _owner_only_command(handler, args) -> int:
    if args.command not in WRITES_NUMBERS:
        return handler(args)
    with owner_only():
        code = handler(args)
    out = getattr(args, "out", None)
    if out and Path(out).is_file():
        owner_only_file(Path(out))  # a file that existed before keeps its inode and its mode: close it too
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        handler = {
            "run": command_run, "runs": command_runs, "sql": command_sql,
            "erase": command_erase, "access": command_access, "audit": command_audit, "export": command_export,
            "check": command_check,
            "migrate": command_migrate, "rules": command_rules, "hash": command_hash,
        }[args.command]
        return _owner_only_command(handler, args)
    except (UsageError, ConfigError, WarehouseKeyError, WarehouseOutdated) as exc:
        print(f"consent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WarehouseLocked as exc:
        print(f"consent: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
