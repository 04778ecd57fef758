"""The one Definitions object `dagster dev`, `dg` and the CLI load."""

from __future__ import annotations

import dagster as dg

from assets.audiences import audience_checks
from assets.checks import CHECKS
from assets.marts import MART_ASSETS, compliance_dashboard
from assets.privacy import retention_purge
from assets.staging import stg_consent_events
from assets.warehouse import published_warehouse
from assets.buckets import bucket_asset, bucket_job
from pipelines.jobs import audience_check_job, consent_job
from resources.warehouse import resources_from_env, schedule_from_env
from pipelines.maintenance import warehouse_maintenance
from pipelines.schedules import maintenance_schedule, nightly_schedule
from pipelines.sensors import alert_on_unfinished_run, build_new_audiences_sensor, build_new_exports_sensor


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    schedule = schedule_from_env()
    resources = resources or resources_from_env()
    buckets = resources["settings"].bucket_count  # the bucket job's steps and its asset's partitions
    return dg.Definitions(
        assets=[stg_consent_events, published_warehouse, retention_purge, *MART_ASSETS, compliance_dashboard,
                audience_checks, bucket_asset(buckets)],
        asset_checks=CHECKS,
        jobs=[consent_job, audience_check_job, warehouse_maintenance, bucket_job(buckets)],
        schedules=[nightly_schedule(schedule.nightly_cron, schedule.nightly_timezone),
                   maintenance_schedule(schedule.maintenance_cron, schedule.nightly_timezone)],
        sensors=[build_new_exports_sensor(schedule.sensor_interval_seconds),
                 build_new_audiences_sensor(schedule.sensor_interval_seconds), alert_on_unfinished_run],
        # Every entry point's resources come from resources_from_env (the CLI overlays its flags).
        resources=resources,
        # DuckDB takes one writer per file: run steps one after the other.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
