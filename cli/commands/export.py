"""`consent export`: the sendable list of a purpose, the suppression list, the renewals due."""

from __future__ import annotations

import sys

from cli.common import (
    EXIT_OK, WAREHOUSE_HELP, UsageError, _business_for, _print_rows, _require_known_names, _resources, _warehouse,
    add_command, parse_at, read_only_query,
)
from consent.storage.access import WarehouseAccess


def register(sub) -> None:
    export = add_command(
        sub, "export", command_export, "write the sendable list of a purpose, or the suppression list",
        "consent export --purpose marketing --business acme_shoes --out sendable.txt",
        "consent export --suppression --business acme_shoes --out suppression.csv",
        "consent export --renewal-due --purpose marketing --business acme_shoes",
    )
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
    export.add_argument("--at", help="the list as it stood at this moment, from the status history (ISO 8601, UTC if "
                                     "no offset; default: the current list; for --renewal-due: now)")


def _say_if_empty(rows: list, args, business: str, when: str = "") -> None:
    """An empty sendable or suppression list is legal, and worth one line: it suppresses or reaches nobody."""
    if rows:
        return
    what = "suppression list" if args.suppression else "sendable list"
    scope = f"{business}" + (f", purpose {args.purpose}" if args.purpose else "") + (f", as of {when} UTC" if when else "")
    print(f"consent export: warning: the {what} of {scope} is empty (0 contacts)", file=sys.stderr)


def command_export(args) -> int:
    at = parse_at(args.at)  # a bad timestamp is told before the warehouse is opened (now when not given)
    warehouse = _warehouse(args)
    business = _business_for(warehouse, args.business)
    _require_known_names(args, warehouse)
    if args.renewal_due:
        return _export_renewals(args, warehouse, business, at)
    if args.at is not None:
        return _export_at(args, warehouse, business, at)
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
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    _write_list(columns, rows, fmt, args.out, f"contacts of {business}")
    _say_if_empty(rows, args, business)
    _note_erased(args, warehouse)
    return EXIT_OK


def _note_erased(args, warehouse: WarehouseAccess) -> None:
    """Under a suppression list: how many erased identifiers it cannot hold (salted hashes only)."""
    erased = read_only_query(warehouse, "SELECT count(*) FROM suppression_list")[1][0][0] if args.suppression else 0
    if erased:
        print(f"note: {erased} erased identifiers are on the suppression list as salted hashes only; "
              "they are kept out of every import and cannot be exported", file=sys.stderr)


def _export_at(args, warehouse: WarehouseAccess, business: str, at) -> int:
    """The sendable or suppression list as it stood at --at: each contact's status then, from
    `consent_status_history`, with the gate's time rules applied at that moment."""
    from consent.sending.lists import SENDABLE_COLUMNS, STATUS_AT, SUPPRESSION_AT, sendable_at

    params = {"purpose": args.purpose, "business": business, "at": at}
    try:
        if args.suppression:
            columns, rows = read_only_query(warehouse, SUPPRESSION_AT, params)
        elif not args.purpose:
            raise UsageError("export needs --purpose (the sendable list) or --suppression")
        else:
            policy = _resources(args, warn=False)["settings"].load_policy()
            columns, rows = read_only_query(warehouse, STATUS_AT, params)
            columns, rows = list(SENDABLE_COLUMNS), sendable_at(columns, rows, policy, args.purpose, at)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    fmt = args.format or ("csv" if args.suppression else "txt")
    if fmt == "txt":  # one contact a line: its number, else its BSUID
        columns, rows = ["contact", *columns[2:]], [(r[1] if r[0] is None else r[0], *r[2:]) for r in rows]
    when = at.isoformat(sep=" ")
    _write_list(columns, rows, fmt, args.out, f"contacts of {business} (as of {when} UTC)")
    _say_if_empty(rows, args, business, when)
    _note_erased(args, warehouse)
    return EXIT_OK


def _export_renewals(args, warehouse: WarehouseAccess, business: str, at) -> int:
    """Contacts opted in for the purpose whose consent lapses within renewal_notice_days: re-ask them."""
    if not args.purpose:
        raise UsageError("export --renewal-due needs --purpose")
    policy = _resources(args, warn=False)["settings"].load_policy()
    if not policy.consent_expires:
        raise UsageError("the policy sets no consent_validity_days: no consent lapses")
    from consent.sending.gate import OPTED_IN_AT, RENEWAL_COLUMNS, renewals_due

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

