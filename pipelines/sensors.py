"""Sensors: a run per batch of new or changed export files, and an alert for runs that died unfinished."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import dagster as dg

from consent.reading.ingest import list_exports
from consent.run.runs import run_summary
from consent.run.alerts import raise_alert
from pipelines.jobs import audience_check_job, consent_job
from resources.warehouse import ConsentSettings, WarehouseResource

# A file must be this old before a run starts, so half-written exports are not read.
SETTLE_SECONDS = 30


def export_fingerprints(exports_dir: Path) -> dict[str, list[int]]:
    """(size, mtime) of every file in a channel folder (and notices/), found by the staging step's own
    rule (`list_exports`): cheap; the run itself compares content hashes."""
    if not exports_dir.is_dir():
        return {}
    return {f.source_file: [f.size_bytes, f.mtime_ns] for f in list_exports(exports_dir, include_notices=True).files}


def new_or_changed(previous: dict[str, list[int]], current: dict[str, list[int]], now: float, settle: float) -> list[str]:
    """Files added or changed since the cursor and quiet for `settle` seconds."""
    return sorted(
        name for name, stamp in current.items()
        if previous.get(name) != stamp and now - stamp[1] / 1e9 >= settle
    )


def _folder_sensor(name: str, job, folder_of, kind: str, tag: str, interval_seconds: int) -> dg.SensorDefinition:
    """A sensor starting one run of `job` per batch of new or changed, settled files in a folder."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_seconds,
        description=f"Starts one run per batch of new or changed files in the {kind} folder (cursor: file sizes and times).",
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def folder_sensor(context: dg.SensorEvaluationContext, settings: ConsentSettings):
        previous = json.loads(context.cursor) if context.cursor else {}
        current = export_fingerprints(folder_of(settings))
        changed = new_or_changed(previous, current, time.time(), SETTLE_SECONDS)
        if not changed:
            return dg.SkipReason(f"no new or changed {kind} files")
        # Only settled files move the cursor: unsettled ones are looked at again next time.
        cursor = {**previous, **{file: current[file] for file in changed}}
        context.update_cursor(json.dumps(cursor, sort_keys=True))
        return dg.RunRequest(
            run_key=f"{kind}-" + hashlib.sha256(json.dumps(cursor, sort_keys=True).encode()).hexdigest()[:16],
            tags={tag: str(len(changed))},
        )

    return folder_sensor


def build_new_exports_sensor(interval_seconds: int = 60) -> dg.SensorDefinition:
    return _folder_sensor("new_exports_sensor", consent_job, lambda s: s.exports_path, "exports", "consent/new_files",
                          interval_seconds)


def build_new_audiences_sensor(interval_seconds: int = 60) -> dg.SensorDefinition:
    """Checks every new or changed audience file before a campaign (`audience_check_job`)."""
    return _folder_sensor("new_audiences_sensor", audience_check_job, lambda s: s.audiences_path, "audiences",
                          "consent/new_audiences", interval_seconds)


@dg.run_failure_sensor(
    name="alert_on_unfinished_run",
    monitored_jobs=[consent_job, audience_check_job],
    description="A run finalises itself (runs row, dashboard, alert). This sensor alerts only for a run that "
    "died before it could: the process was killed, or the warehouse could not be opened or locked.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def alert_on_unfinished_run(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    summary = _summary(warehouse, context.dagster_run.run_id)
    if summary.get("finished"):
        return  # the run recorded its end and raised its own alert
    summary.update(status="failed", reason=context.failure_event.message or "run failed")
    raise_alert(summary, warehouse.file, warehouse.alert)


def _summary(warehouse: WarehouseResource, run_id: str) -> dict:
    try:
        with warehouse.connect(read_only=True) as con:
            return run_summary(con, run_id)
    except Exception as exc:  # the alert must go out even when the warehouse cannot be read
        return {"run_id": run_id, "published": False, "warehouse_error": type(exc).__name__}
