"""The schedules: the nightly reconciliation and the daily warehouse upkeep (cron and time zone configurable)."""

import dagster as dg

from pipelines.jobs import consent_job
from pipelines.maintenance import warehouse_maintenance


def nightly_schedule(cron: str = "0 2 * * *", timezone: str = "UTC") -> dg.ScheduleDefinition:
    return _stopped_schedule(
        "consent_schedule", consent_job, cron, timezone,
        "Nightly reconciliation (CONSENT_NIGHTLY_CRON, CONSENT_NIGHTLY_TIMEZONE; default 02:00 UTC).",
    )


def maintenance_schedule(cron: str = "0 4 * * *", timezone: str = "UTC") -> dg.ScheduleDefinition:
    return _stopped_schedule(
        "warehouse_maintenance_schedule", warehouse_maintenance, cron, timezone,
        "Daily warehouse upkeep, after the night (CONSENT_MAINTENANCE_CRON, CONSENT_NIGHTLY_TIMEZONE; "
        "default 04:00 UTC).",
    )


def _stopped_schedule(name: str, job, cron: str, timezone: str, description: str) -> dg.ScheduleDefinition:
    """A schedule that starts switched off: an operator turns it on (docs/production.md)."""
    return dg.ScheduleDefinition(
        name=name, job=job, cron_schedule=cron, execution_timezone=timezone, description=description,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
