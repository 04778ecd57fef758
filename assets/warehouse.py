"""Warehouse layer: the published tables, all written by one transaction."""


import dagster as dg

from assets import row_count, table_of
from assets.staging import stg_consent_events
from consent.privacy.erasure import erased_rows_staged
from consent.run.publish import publish
from consent.run.progress import ProgressReporter
from assets.buckets import BUCKET_JOB, fan_out_buckets_in_processes
from resources.warehouse import ConsentSettings, WarehouseResource

# The published tables this step writes; each one's description and columns come from the data
# dictionary (consent/domain/tables.yml).
PUBLISHED = ("consent_events", "quarantine", "skipped_items", "message_statuses", "source_files", "consent_status",
             "consent_violations", "consent_status_history", "consent_notices", "runs", "identifier_links")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(name, group_name="warehouse", kinds={"duckdb"}, deps=[stg_consent_events], **table_of(name))
        for name in PUBLISHED
    ],
)
def published_warehouse(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
):
    """Appends the staged run to the ledger and reconciles affected contacts, in one transaction (with
    CONSENT_BUCKETS above 1, a transaction per bucket; on DuckLake with CONSENT_WORKERS above 1 too,
    the buckets decided in processes of their own by `decide_buckets_job`)."""
    policy = settings.load_policy()
    buckets, workers = settings.bucket_count, settings.worker_count
    fan_out = None
    if warehouse.lake and buckets > 1 and workers > 1:
        # Each bucket in a process of its own, `workers` at a time (assets/buckets.py).
        def fan_out(count: int, full: bool) -> int:
            context.log.info(f"deciding {count} buckets in processes, {workers} at a time ({BUCKET_JOB})")
            return fan_out_buckets_in_processes(context.instance, warehouse, settings, buckets=count,
                                                workers=workers, full=full, parent_run_id=context.run.run_id)
    with warehouse.connect() as con:
        summary = publish(
            con, policy=policy, full=settings.full, progress=ProgressReporter(context.log),
            workers=workers, buckets=buckets, fan_out=fan_out,
        )
        counts = {
            name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in PUBLISHED
        }
        erased = erased_rows_staged(con) + summary["suppressed_events"]
    if erased:
        # The night staged rows of an erased number before dropping them: rewrite the file, so no
        # byte of them is left in its freed blocks.
        warehouse.compact()
        context.log.info(f"{erased} rows of erased numbers were kept without their identifiers; warehouse compacted")
    context.log.info(
        f"published run: {summary['new_events']} new events, {summary['quarantined']} quarantined, "
        f"{summary['contacts_reconciled']} contacts reconciled"
    )
    for name in PUBLISHED:
        metadata = row_count(counts[name])
        if name == "consent_events":
            metadata["new_events"] = dg.MetadataValue.int(summary["new_events"])
        if name == "consent_status":
            metadata["contacts_reconciled"] = dg.MetadataValue.int(summary["contacts_reconciled"])
        yield dg.MaterializeResult(asset_key=name, metadata=metadata)
