"""Warehouse layer: the published tables, all written by one transaction."""


import dagster as dg

from assets.staging import stg_consent_events
from consent.privacy.erasure import erased_rows_staged
from consent.run.publish import publish
from consent.run.progress import ProgressReporter
from resources.warehouse import ConsentSettings, WarehouseResource

PUBLISHED = {
    "consent_events": "The append-only ledger: one row per canonical consent event, with lineage "
    "(source_file, source_line) and a deterministic event_id.",
    "quarantine": "Every input row that could not become an event, with its raw content and the reason.",
    "skipped_items": "Webhook items that are not consent events (e.g. delivery statuses), counted and kept.",
    "message_statuses": "Every WhatsApp message status (sent, delivered, read, failed): what the business sent, to whom, when.",
    "source_files": "The file registry: path, content hash, size, first and last run, and counts per file.",
    "consent_status": "One row per business, contact and purpose: status, sendable, and the evidence that decided it.",
    "consent_violations": "Every opt-in refused as consent (or warned about), with the rule and lineage.",
    "consent_status_history": "Every status change per contact and purpose, as intervals (valid_from, valid_to).",
    "consent_notices": "The registry of consent notices (append-only): the exact text people saw, business, purposes, validity.",
    "runs": "One row per run: mode, clock, counts per channel, step durations, failed checks.",
    "identifier_links": "Phone <-> WhatsApp user ID (BSUID) <-> parent BSUID, and BSUID changes, as items and rows "
    "showed them together: earliest sighting and lineage.",
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(name, description=text, group_name="warehouse", kinds={"duckdb"}, deps=[stg_consent_events])
        for name, text in PUBLISHED.items()
    ],
)
def published_warehouse(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
):
    """Appends the staged run to the ledger and reconciles affected contacts, in one transaction."""
    policy = settings.load_policy()
    with warehouse.connect() as con:
        summary = publish(
            con, policy=policy, full=settings.full, progress=ProgressReporter(context.log),
            workers=settings.worker_count,
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
        metadata = {"row_count": dg.MetadataValue.int(int(counts[name]))}
        if name == "consent_events":
            metadata["new_events"] = dg.MetadataValue.int(summary["new_events"])
        if name == "consent_status":
            metadata["contacts_reconciled"] = dg.MetadataValue.int(summary["contacts_reconciled"])
        yield dg.MaterializeResult(asset_key=name, metadata=metadata)
