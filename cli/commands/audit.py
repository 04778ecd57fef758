"""`consent audit`: the canned audits of `audits/*.sql`, each a read-only query with its arguments."""

from __future__ import annotations

import re
from pathlib import Path

from cli.common import EXIT_OK, WAREHOUSE_HELP, UsageError, _contact, _print_rows, _warehouse, add_command, read_only_query
from consent.storage.access import REPO_ROOT


def register(sub) -> None:
    audit = add_command(
        sub, "audit", command_audit, "run a canned audit (audits/*.sql); without NAME, list them",
        "consent audit", "consent audit evidence \"+49 151 12345678\"", "consent audit evidence --hash 3f1c0a9e...",
        "consent audit violations --format csv",
    )
    audit.add_argument("name", nargs="?", help="audit name, e.g. evidence, violations")
    audit.add_argument("args", nargs="*", help="the audit's arguments (e.g. a NUMBER)")
    audit.add_argument("--country", help="ISO 3166 region for a national spelling of NUMBER")
    audit.add_argument("--hash", dest="contact_hash", metavar="HASH",
                       help="evidence only: the contact whose salted hash this is (as the dashboard and marts show it); "
                            "numbers and BSUIDs in the output are masked")
    audit.add_argument("--warehouse", help=WAREHOUSE_HELP)
    audit.add_argument("--format", choices=("table", "csv", "json"), default="table", help="how rows are printed")


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
