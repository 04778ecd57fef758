"""The one Definitions object `dagster dev`, `dg` and the CLI load."""

from __future__ import annotations

import dagster as dg

from assets.checks import CHECKS
from assets.staging import stg_consent_events
from assets.warehouse import published_warehouse
from pipelines.jobs import consent_job
from pipelines.resources import resources_from_env


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[stg_consent_events, published_warehouse],
        asset_checks=CHECKS,
        jobs=[consent_job],
        resources=resources or resources_from_env(),
        # DuckDB takes one writer per file: run steps one after the other.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
