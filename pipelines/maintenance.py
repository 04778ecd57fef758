"""The `warehouse_maintenance` job: the storage's upkeep (consent/storage/maintenance.py), one step.

On DuckLake it merges small files, expires snapshots older than the retention and deletes the files
no kept snapshot refers to; a file warehouse is checkpointed. The run is recorded in `runs` (mode
`maintenance`) and ends like every run (its warehouse resource holds the run lock and finalises it).
"""

import dagster as dg

from consent.run.runs import start_run
from consent.storage.maintenance import maintain
from resources.warehouse import ConsentSettings, WarehouseResource


@dg.op(description="Merge small files, expire snapshots beyond the retention, delete unreferenced files "
                   "(DuckLake); checkpoint a file warehouse.")
def maintain_warehouse(context: dg.OpExecutionContext, warehouse: WarehouseResource,
                       settings: ConsentSettings) -> dg.Output[None]:
    with warehouse.connect() as con:
        start_run(con, context.run.run_id, mode="maintenance", as_of=settings.run_clock())
    done = maintain(warehouse)
    for line in done.lines:
        context.log.info(line)
    metadata = {"storage": done.storage, "retention_days": done.retention_days, "files_removed": done.files_removed}
    if done.storage == "ducklake":
        metadata.update(snapshots_before=done.snapshots[0], snapshots_after=done.snapshots[1],
                        data_files_before=done.data_files[0], data_files_after=done.data_files[1])
    return dg.Output(None, metadata=metadata)


@dg.job(description="Warehouse upkeep: on DuckLake, merge small files, expire snapshots older than "
                    "CONSENT_SNAPSHOT_RETENTION_DAYS and delete the files no kept snapshot refers to; "
                    "on a file, a checkpoint.", executor_def=dg.in_process_executor)
def warehouse_maintenance():
    maintain_warehouse()
