"""Marts layer: compliance tables for dashboards and auditors, and the HTML dashboard."""

from pathlib import Path

import dagster as dg

from assets import column_schema, row_count
from assets.privacy import retention_purge
from assets.warehouse import published_warehouse
from consent import marts
from consent.run.progress import ProgressReporter
from resources.warehouse import ConsentSettings, WarehouseResource

# one per mart: its YAML's keys hold
KEY_CHECK = "keys_unique_and_not_null"

PUBLISHED_DEPS = [
    published_warehouse.keys_by_output_name[name]
    for name in ("consent_events", "consent_status", "consent_status_history", "consent_violations", "quarantine",
                 "message_statuses", "consent_notices", "runs", "identifier_links")
]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            name,
            group_name="marts",
            kinds={"duckdb", "sql"},
            # after the retention purge: a purge makes the next build whole
            deps=[*PUBLISHED_DEPS, retention_purge.key],
            description=f"{marts.purpose_of(name)} (consent/marts/{name}.sql, .yml)",
            metadata=column_schema(marts.SPECS[name].doc),
        )
        for name in marts.MARTS
    ],
    check_specs=[
        dg.AssetCheckSpec(KEY_CHECK, asset=name, description=f"{marts.SPECS[name].doc.grain}: the key "
                          f"({', '.join(marts.SPECS[name].doc.keys)}, from consent/marts/{name}.yml) is never null "
                          "and held by one row only (ERROR).")
        for name in marts.MARTS
    ],
    can_subset=True,
)
def compliance_marts(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
):
    """Every mart (or those selected), one after the other on one connection: each is its own asset,
    built in one step (a step and a connection each cost more than a mart's build on a quiet night)."""
    policy = settings.load_policy()
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    names, progress = [n for n in marts.MARTS if n in selected], ProgressReporter(context.log)
    with warehouse.connect() as con:
        marts.prepare(con, policy)  # once for every mart of the step (the calendar scans the ledger's dates)
        for built, name in enumerate(names):
            progress("building marts", built, len(names))
            marts.fold_writes(con)
            rows = marts.build(con, name, policy, run_id=context.run_id, full=settings.full, prepared=True)
            mode = marts.last_mode(con, name)
            yield dg.MaterializeResult(
                asset_key=name, metadata={**row_count(rows), "build": dg.MetadataValue.text(mode or "full")},
            )
            if dg.AssetCheckKey(dg.AssetKey(name), KEY_CHECK) in context.selected_asset_check_keys:
                yield key_check_result(con, name)
        progress("building marts", len(names), len(names))


def key_check_result(con, name: str) -> dg.AssetCheckResult:
    problems = marts.key_problems(con, name)
    return dg.AssetCheckResult(
        asset_key=name, check_name=KEY_CHECK, passed=not any(problems.values()), severity=dg.AssetCheckSeverity.ERROR,
        metadata={what: dg.MetadataValue.int(n) for what, n in problems.items()},
    )


MART_ASSETS = [compliance_marts]


@dg.asset(
    group_name="marts",
    kinds={"html", "plotly"},
    deps=list(compliance_marts.keys),
)
def compliance_dashboard(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
) -> dg.MaterializeResult:
    """A self-contained HTML compliance dashboard (`<warehouse folder>/dashboard.html`), per business
    (a selector): headline figures, opt-ins and opt-outs over time per channel, sendable audience
    per purpose, evidence coverage and what is missing, violation reasons, send-audit findings,
    opt-out timeliness (late apart from backfilled), renewals, notices; quarantine; failed checks
    of the last run. Each hash shows the command that prints its evidence. Opens offline; no raw numbers."""
    from consent.reports.dashboard import render_dashboard

    out = Path(warehouse.file).resolve().parent / "dashboard.html"
    with warehouse.connect(read_only=False) as con:
        size = render_dashboard(con, out, settings.load_channels().business_names())
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(out)), "bytes": dg.MetadataValue.int(size)})
