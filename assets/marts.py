"""Marts layer: compliance tables for dashboards and auditors, and the HTML dashboard."""

from pathlib import Path

import dagster as dg

from assets.privacy import retention_purge
from assets.warehouse import published_warehouse
from consent import marts
from pipelines.resources import ConsentSettings, WarehouseResource

PUBLISHED_DEPS = [
    published_warehouse.keys_by_output_name[name]
    for name in ("consent_events", "consent_status", "consent_status_history", "consent_violations", "quarantine",
                 "message_statuses", "consent_notices", "runs", "identifier_links")
]


def mart_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name="marts",
        kinds={"duckdb", "sql"},
        # after the retention purge: a purge makes the next build whole
        deps=[*PUBLISHED_DEPS, retention_purge.key],
        description=f"{marts.purpose_of(name)} (consent/marts/{name}.sql)",
    )
    def build_mart(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
    ) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            rows = marts.build(con, name, warehouse.salt(), settings.load_policy(), run_id=context.run_id,
                               full=settings.full)
            mode = marts.last_mode(con, name)
        return dg.MaterializeResult(metadata={"row_count": dg.MetadataValue.int(rows), "build": dg.MetadataValue.text(mode or "full")})

    return build_mart


MART_ASSETS = [mart_asset(name) for name in marts.MARTS]


@dg.asset(
    group_name="marts",
    kinds={"html", "plotly"},
    deps=[asset.key for asset in MART_ASSETS],
)
def compliance_dashboard(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """A self-contained HTML compliance dashboard (`<warehouse folder>/dashboard.html`):
    headline figures, opt-ins and opt-outs over time per channel, sendable audience
    per purpose, evidence coverage, quarantine and violation reasons, failed checks
    of the last run, send-audit findings. Opens offline; no raw numbers."""
    from consent.dashboard import render_dashboard

    out = Path(warehouse.file).resolve().parent / "dashboard.html"
    with warehouse.connect(read_only=False) as con:
        size = render_dashboard(con, out)
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(out)), "bytes": dg.MetadataValue.int(size)})
