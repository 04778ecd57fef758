"""Audiences layer: every new audience file checked before a campaign (consent/sending/gate.py).

An audience is a CSV in `audiences/<purpose>/` beside the exports folder
(`audiences/<business>/<purpose>/` when businesses.yaml names several
businesses). Each file not checked before (by content, purpose and business)
is decided row by row; `<warehouse folder>/checked/` receives the sendable
rows (`<name>.csv`) and every row with its decision (`<name>.decisions.csv`).
The check fails, and the run alerts, when an audience holds an opted-out
contact.
"""


from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from assets import column_schema, redacted, row_count
from consent.sending.gate import AudienceError, decide, read_audience, record_check, sendable_rows, summary, write_decisions
from consent.run.runs import start_run
from consent.storage.dictionary import published
from resources.warehouse import ConsentSettings, WarehouseResource


@dataclass
class AudienceFile:
    path: Path
    business: str
    purpose: str
    out_name: str  # relative path under checked/, without suffix


def audience_files(root: Path, businesses: list[str], purposes: list[str]) -> list[AudienceFile]:
    """The audience CSVs of the folder, with the business and purpose their path names."""
    found = []
    if not root.is_dir():
        return found
    several = len(businesses) > 1
    for path in sorted(root.rglob("*.csv")):
        parts = path.relative_to(root).parts
        if several and len(parts) == 3 and parts[0] in businesses and parts[1] in purposes:
            found.append(AudienceFile(path, parts[0], parts[1], f"{parts[0]}/{path.stem}"))
        elif not several and len(parts) == 2 and parts[0] in purposes:
            found.append(AudienceFile(path, businesses[0], parts[0], path.stem))
    return found


def unplaced_files(root: Path, placed: list[AudienceFile]) -> list[str]:
    known = {f.path for f in placed}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p not in known) if root.is_dir() else []


@dg.asset(
    group_name="audiences",
    kinds={"duckdb", "csv"},
    # every check is logged in send_checks (and each row's decision in send_check_rows)
    metadata=column_schema(published()["send_checks"]),
    check_specs=[dg.AssetCheckSpec(
        "audiences_hold_no_opted_out", asset="audience_checks",
        description="No audience checked in this run holds a contact who opted out of its purpose (ERROR: alerts).",
    )],
)
def audience_checks(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings):
    """Checks every new audience file (`audiences/`): the sendable rows and the decisions go to
    `<warehouse folder>/checked/`; each check is logged in `send_checks` / `send_check_rows`."""
    policy = settings.load_policy()
    businesses = settings.load_channels().business_names()
    root = settings.audiences_path
    files = audience_files(root, businesses, policy.purposes)
    out_dir = Path(warehouse.file).resolve().parent / "checked"
    checked, opted_out, notes = [], {}, []
    with warehouse.connect() as con:
        start_run(con, context.run.run_id, mode="audience_check", as_of=settings.run_clock())
        done = {tuple(r) for r in con.execute("SELECT audience_hash, purpose, business FROM send_checks").fetchall()}
        for item in files:
            try:
                audience = read_audience(item.path)
            except AudienceError as exc:
                notes.append(str(exc))
                continue
            if (audience.file_hash, item.purpose, item.business) in done:
                continue
            at = settings.run_clock()
            decided = decide(con, audience, purpose=item.purpose, business=item.business, at=at, policy=policy,
                             workers=settings.worker_count)
            record_check(con, decided, audience, purpose=item.purpose, business=item.business, at=at,
                         run_id=context.run.run_id)
            target = out_dir / item.out_name
            target.parent.mkdir(parents=True, exist_ok=True)
            sendable_rows(decided, audience).write_csv(target.with_suffix(".csv"))
            write_decisions(decided, target.with_name(target.name + ".decisions.csv"), "csv")
            counts = summary(decided)
            checked.append({"file": item.path.relative_to(root).as_posix(), "purpose": item.purpose,
                            "business": item.business, "rows": decided.height, **counts})
            if counts.get("opted_out"):
                opted_out[item.path.relative_to(root).as_posix()] = counts["opted_out"]
        logged = con.execute("SELECT count(*) FROM send_checks").fetchone()[0]
    notes += [f"{name}: not in audiences/<purpose>/ (or <business>/<purpose>/): not checked"
              for name in unplaced_files(root, files)]
    context.log.info(f"checked {len(checked)} audience files; {len(opted_out)} hold opted-out contacts")
    yield dg.MaterializeResult(metadata=redacted({
        **row_count(logged),
        "checked": dg.MetadataValue.json(checked), "notes": dg.MetadataValue.json(notes),
        "out_dir": dg.MetadataValue.path(str(out_dir)),
    }))
    yield dg.AssetCheckResult(
        check_name="audiences_hold_no_opted_out",
        passed=not opted_out,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=redacted({"opted_out_rows_by_file": dg.MetadataValue.json(opted_out)}),
    )
