"""Staging layer: this run's exports, read and normalised, not yet published."""


import dagster as dg

from assets import column_schema, redacted, row_count
from consent.domain.redact import redact
from consent.storage.dictionary import published
from consent.run.staging import stage_run
from consent.run.progress import ProgressReporter
from resources.warehouse import ConsentSettings, WarehouseResource


@dg.asset(
    group_name="staging",
    kinds={"polars", "duckdb"},
    # the staged events have the ledger's columns
    metadata=column_schema(published()["consent_events"]),
)
def stg_consent_events(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings
) -> dg.MaterializeResult:
    """Canonical events, quarantine rows and skipped webhook items of the export
    files this run has not seen before (by content hash), with phone numbers
    normalised through the warehouse's cache. Written to the `staging.stg_*`
    tables, which each run replaces; nothing published changes here."""
    staged = stage_run(
        warehouse.connect,
        settings.exports_path,
        policy=settings.load_policy(),
        channels=settings.load_channels(),
        as_of=settings.run_clock(),
        run_id=context.run_id,
        mode="full" if settings.full else "incremental",
        workers=settings.worker_count,
        progress=ProgressReporter(context.log),
        reread=settings.reread,
    )
    new_files = [f for f in staged.files if f.state == "new"]
    for f in staged.files:
        for note in f.notes:
            context.log.warning(redact(f"{f.source_file}: {note}"))
    for name in staged.ignored:
        context.log.warning(redact(f"ignored {name}"))
    return dg.MaterializeResult(
        metadata=redacted({
            **row_count(staged.events),
            "files_seen": len(staged.files),
            "files_read": len(new_files),
            "rows_read": sum(f.rows_read for f in new_files),
            "events": staged.events,
            "quarantined": staged.quarantined,
            "skipped": staged.skipped,
            "phone_cache_hits": staged.seconds["phone_cache_hits"],
            "phone_cache_misses": staged.seconds["phone_cache_misses"],
            "files": dg.MetadataValue.md(
                "| channel | file | rows | events | quarantined | skipped |\n|---|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {f.channel} | {f.source_file} | {f.rows_read} | {f.events} | {f.quarantined} | {f.skipped} |"
                    for f in new_files
                )
            ),
        })
    )
