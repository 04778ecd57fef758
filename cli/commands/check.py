"""`consent check`: the pre-send gate, row by row, for an audience file; each check is logged."""

from __future__ import annotations

import sys
from pathlib import Path

from cli.common import (
    EXIT_BLOCKED, EXIT_OK, LOCK_HELP, WAREHOUSE_HELP, UsageError, _business_for, _require_known_names, _resources,
    _table, add_command, parse_at,
)


def register(sub) -> None:
    check = add_command(
        sub, "check", command_check,
        "decide, row by row, whether an audience may be messaged (exit 0: all may; 3: some blocked)",
        "consent check audience.csv --purpose marketing --business acme_shoes --out decided.csv",
    )
    check.add_argument("audience", help="CSV with a `phone` column (any spelling) and/or `whatsapp_user_id`; other columns kept")
    check.add_argument("--purpose", required=True, help="what the campaign sends, e.g. marketing")
    check.add_argument("--business", help="the business that sends (required when the warehouse holds several)")
    check.add_argument("--at", help="decide as of this moment (ISO 8601, UTC if no offset; default: now)")
    check.add_argument("--default-region", dest="default_region", help="ISO 3166 region for national spellings without `country`")
    check.add_argument("--out", help="file for the audience with its decisions (default: standard output)")
    check.add_argument("--format", choices=("csv", "json"), default="csv", help="format of the decided audience")
    check.add_argument("--warehouse", help=WAREHOUSE_HELP)
    check.add_argument("--policy", help="policy YAML (validity, renewal notice; default: CONSENT_POLICY, or the exports folder's)")
    check.add_argument("--exports", help="exports folder (for its policy.yaml; default: CONSENT_EXPORTS)")
    check.add_argument("--lock-timeout", type=float, help=LOCK_HELP)


def command_check(args) -> int:
    from consent.sending.gate import AudienceError, decide, read_audience, record_check, summary, write_decisions
    resources = _resources(args, warn=False)
    warehouse, settings = resources["warehouse"], resources["settings"]
    if not warehouse.exists():
        raise UsageError(f"no warehouse at {warehouse.describe()}")
    with warehouse.connect():
        pass  # a writing command: an older warehouse is migrated first
    business = _business_for(warehouse, args.business)
    _require_known_names(args, warehouse)
    at = parse_at(args.at)
    try:
        audience = read_audience(Path(args.audience))
    except AudienceError as exc:
        raise UsageError(str(exc)) from exc
    policy = settings.load_policy()
    lock = warehouse.run_lock()
    lock.acquire()  # the check is logged in the warehouse: one writer at a time
    try:
        with warehouse.connect() as con:
            decided = decide(con, audience, purpose=args.purpose, business=business, at=at, policy=policy,
                             default_region=args.default_region, workers=settings.worker_count)
            check_id = record_check(con, decided, audience, purpose=args.purpose, business=business, at=at)
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

