"""Marts layer: compliance tables for dashboards and auditors, and the HTML dashboard."""

from pathlib import Path

import dagster as dg

from assets.privacy import retention_purge
from assets.warehouse import published_warehouse
from consent import marts
from consent.storage.sql import use_salt
from resources.warehouse import ConsentSettings, WarehouseResource

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
            description=f"{marts.purpose_of(name)} (consent/marts/{name}.sql)",
        )
        for name in marts.MARTS
    ],
    can_subset=True,
)
def compliance_marts(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
):
    """Every mart (or those selected), one after the other on one connection: each is its own asset,
    built in one step (a step and a connection each cost more than a mart's build on a quiet night)."""
    policy, salt = settings.load_policy(), warehouse.salt()
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    with warehouse.connect() as con:
        use_salt(con, salt)
        marts.prepare(con, policy)  # once for every mart of the step (the calendar scans the ledger's dates)
        for name in (n for n in marts.MARTS if n in selected):
            rows = marts.build(con, name, salt, policy, run_id=context.run_id, full=settings.full, prepared=True)
            mode = marts.last_mode(con, name)
            yield dg.MaterializeResult(
                asset_key=name,
                metadata={"row_count": dg.MetadataValue.int(rows), "build": dg.MetadataValue.text(mode or "full")},
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
    opt-out timeliness (late apart from backfilled), renewals; quarantine and notices; failed checks
    of the last run. Each hash shows the command that prints its evidence. Opens offline; no raw numbers."""
    from consent.reports.dashboard import render_dashboard

    out = Path(warehouse.file).resolve().parent / "dashboard.html"
    with warehouse.connect(read_only=False) as con:
        size = render_dashboard(con, out, settings.load_channels().business_names())
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(out)), "bytes": dg.MetadataValue.int(size)})
