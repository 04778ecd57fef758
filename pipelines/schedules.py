"""The schedules: the nightly reconciliation and the daily warehouse upkeep (cron and time zone configurable)."""

import dagster as dg

from pipelines.jobs import consent_job
from pipelines.maintenance import warehouse_maintenance


def nightly_schedule(cron: str = "0 2 * * *", timezone: str = "UTC") -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="consent_schedule",
        job=consent_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        description="Nightly reconciliation (CONSENT_NIGHTLY_CRON, CONSENT_NIGHTLY_TIMEZONE; default 02:00 UTC).",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )


def maintenance_schedule(cron: str = "0 4 * * *", timezone: str = "UTC") -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="warehouse_maintenance_schedule",
        job=warehouse_maintenance,
        cron_schedule=cron,
        execution_timezone=timezone,
        description="Daily warehouse upkeep, after the night (CONSENT_MAINTENANCE_CRON, CONSENT_NIGHTLY_TIMEZONE; "
                    "default 04:00 UTC).",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
