"""The privacy commands: `erase` (GDPR Art. 17), `access` (Art. 15) and `hash` (find a person
in the marts, audits and suppression list by their salted hash)."""

from __future__ import annotations

import json
from pathlib import Path

from cli.common import EXIT_OK, LOCK_HELP, WAREHOUSE_HELP, UsageError, _contact, _resources, _warehouse, add_command
from consent.storage.access import owner_only_file


def register(sub) -> None:
    erase = add_command(
        sub, "erase", command_erase, "erase a number everywhere (GDPR Art. 17), keeping a salted hash",
        "consent erase \"0151 12345678\" --country DE --exports sample_exports",
    )
    erase.add_argument("number", help="the number in any spelling")
    erase.add_argument("--country", help="ISO 3166 region for a national spelling")
    erase.add_argument("--warehouse", help=WAREHOUSE_HELP)
    erase.add_argument("--exports", help="exports folder to list files still holding the number (default: CONSENT_EXPORTS)")
    erase.add_argument("--reason", default="erasure request (GDPR Art. 17)", help="why, as the erasure log keeps it")
    erase.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    access = add_command(
        sub, "access", command_access,
        "write every event, status and evidence of a number as JSON (GDPR Art. 15)",
        "consent access +4915112345678 --out access.json",
    )
    access.add_argument("number", help="the number in any spelling")
    access.add_argument("--country", help="ISO 3166 region for a national spelling")
    access.add_argument("--warehouse", help=WAREHOUSE_HELP)
    access.add_argument("--out", help="JSON file to write (default: access_<hash>.json in the warehouse folder)")
    hashed = add_command(
        sub, "hash", command_hash,
        "print the salted hash of one number or BSUID, as marts, audits and the suppression list hold it",
        "consent hash \"+49 151 12345678\"",
    )
    hashed.add_argument("number", help="the number in any spelling, or a BSUID")
    hashed.add_argument("--country", help="ISO 3166 region for a national spelling")
    hashed.add_argument("--warehouse", help=WAREHOUSE_HELP)


def command_erase(args) -> int:
    from datetime import datetime, timezone

    from consent.privacy.erasure import erase, files_containing, scrub_warehouse_files
    phone = _contact(args.number, args.country)
    resources = _resources(args)
    warehouse, exports = resources["warehouse"], resources["settings"].exports_path
    if not warehouse.exists():
        raise UsageError(f"no warehouse at {warehouse.describe()}")
    lock = warehouse.run_lock()
    lock.acquire()  # no run may publish while the number is being erased
    try:
        with warehouse.connect() as con:
            report = erase(con, phone, datetime.now(timezone.utc).replace(tzinfo=None), args.reason)
        # Deleted rows can linger in freed blocks: rewrite the file so no byte of the number is left.
        warehouse.compact()
        # Access reports this tool wrote for the number are files the warehouse keeps too.
        folder = Path(warehouse.file).resolve().parent
        for old_report in folder.glob(f"access_{report.phone_hash[:12]}.json"):
            old_report.unlink()
        # Alerts, Data Docs, the dashboard, other reports: whatever else the warehouse wrote.
        database = Path(warehouse.file).resolve()
        files = scrub_warehouse_files(folder, report.identifiers or [phone],
                                      keep={*folder.glob(database.name + "*"), warehouse.read_copy,
                                            *warehouse.lake_data_files()})
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
    from consent.privacy.erasure import access_report
    from consent.storage.sql import salted_hash

    phone = _contact(args.number, args.country)
    warehouse = _warehouse(args)
    try:
        with warehouse.reader(hashing=True) as con:
            report = access_report(con, phone)
            hashed = salted_hash(con, phone)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    out = Path(args.out) if args.out else Path(warehouse.file).resolve().parent / f"access_{hashed[:12]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    owner_only_file(out)  # created owner-only (see main); one written by older code is closed too
    print(f"wrote {out}: {len(report['consent_events'])} events, {len(report['consent_status'])} statuses, "
          f"{len(report['consent_violations'])} violations, {len(report['quarantine'])} quarantined rows")
    return EXIT_OK


def command_hash(args) -> int:
    """The salted hash of one number or BSUID: how an auditor finds a person in the marts, audits
    and the suppression list without any SQL reader holding the salt."""
    contact = _contact(args.number, args.country)
    hashed = _resources(args, warn=False)["warehouse"].hash_identifier(contact)
    if not hashed:
        raise UsageError("no hash salt yet: set CONSENT_HASH_SALT, or run once (it is kept beside the warehouse)")
    print(hashed)
    return EXIT_OK

