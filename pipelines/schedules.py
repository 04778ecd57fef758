"""The nightly schedule of the reconciliation job (cron and time zone configurable)."""

import dagster as dg

from pipelines.jobs import consent_job


def nightly_schedule(cron: str = "0 2 * * *", timezone: str = "UTC") -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="consent_schedule",
        job=consent_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        description="Nightly reconciliation (CONSENT_NIGHTLY_CRON, CONSENT_NIGHTLY_TIMEZONE; default 02:00 UTC).",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
