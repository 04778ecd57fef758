"""Privacy layer: retention runs every night after publishing."""

import json

import dagster as dg

from assets.warehouse import published_warehouse
from consent.privacy.erasure import purge_retention
from resources.warehouse import ConsentSettings, WarehouseResource


@dg.asset(
    group_name="privacy",
    kinds={"duckdb"},
    deps=[published_warehouse.keys_by_output_name["consent_events"], published_warehouse.keys_by_output_name["quarantine"]],
)
def retention_purge(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
) -> dg.MaterializeResult:
    """What the nightly retention purged: raw export rows (quarantine and skipped
    raw rows, `phone_raw`) older than `raw_retention_days`, and the events,
    statuses and violations of contacts whose consent ended more than
    `evidence_retention_years` ago (policy.yaml)."""
    policy = settings.load_policy()
    with warehouse.connect() as con:
        report = purge_retention(
            con, settings.run_clock(), policy.raw_retention_days, policy.evidence_retention_years
        )
        con.execute(
            "UPDATE runs SET retention = ? WHERE run_id = ?",
            [json.dumps(report.__dict__), context.run_id],
        )
    context.log.info(
        f"retention: {report.raw_rows_cleared} raw rows cleared, {report.events_purged} events of "
        f"{report.contacts_purged} contacts purged"
    )
    return dg.MaterializeResult(metadata={k: dg.MetadataValue.int(v) for k, v in report.__dict__.items()})
