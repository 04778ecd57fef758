"""The one Definitions object `dagster dev`, `dg` and the CLI load."""

from __future__ import annotations

import dagster as dg

from assets.checks import CHECKS
from assets.marts import MART_ASSETS, compliance_dashboard
from assets.privacy import retention_purge
from assets.staging import stg_consent_events
from assets.warehouse import published_warehouse
from pipelines.jobs import consent_job
from pipelines.resources import environment, resources_from_env
from pipelines.schedules import nightly_schedule
from pipelines.sensors import alert_on_failed_checks, alert_on_failed_run, build_new_exports_sensor


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    env = environment()
    return dg.Definitions(
        assets=[stg_consent_events, published_warehouse, retention_purge, *MART_ASSETS, compliance_dashboard],
        asset_checks=CHECKS,
        jobs=[consent_job],
        schedules=[nightly_schedule(env.nightly_cron, env.nightly_timezone)],
        sensors=[build_new_exports_sensor(env.sensor_interval_seconds), alert_on_failed_run, alert_on_failed_checks],
        resources=resources or resources_from_env(env),
        # DuckDB takes one writer per file: run steps one after the other.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
