"""Resources: the Dagster face of the one door to the warehouse and of the run's settings.

`WarehouseResource` and `ConsentSettings` are `consent/storage/access.py`'s
`WarehouseAccess` and `SettingsAccess` (connect, salt, lock, settings read from
the environment when used) as Dagster resources; the warehouse resource also
holds the run lock for a whole run and finalises the run at its teardown.

Every entry point builds its resources with `resources_from_env` (the CLI
overlays its flags): `dagster dev`, the daemon, `dagster job execute` and
`consent` read the same environment variables (`SETTINGS`) with the same
defaults, so a setting means the same thing whichever door a run came in by.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from consent.storage.access import NoRunLock, RunLock, SettingsAccess, WarehouseAccess


# The job that decides a night's buckets in processes of their own, launched by the night (assets/buckets.py).
BUCKET_JOB = "decide_buckets_job"


class WarehouseResource(dg.ConfigurableResource, WarehouseAccess):
    """The DuckDB consent warehouse file, encrypted (AES-GCM) when a key is given.

    Unset fields come from the environment (CONSENT_WAREHOUSE, CONSENT_WAREHOUSE_KEY,
    CONSENT_HASH_SALT, CONSENT_ALERT_COMMAND, CONSENT_LOCK_TIMEOUT_SECONDS,
    CONSENT_MEMORY_LIMIT, CONSENT_TEMP_DIRECTORY, CONSENT_SNAPSHOT_RETENTION_DAYS)."""

    # A DuckDB file, or a DuckLake catalog: `ducklake:postgres:<libpq string>`, `ducklake:sqlite:<file>`,
    # `ducklake:<file>`, its Parquet files in `data_path` (a folder or s3://bucket/prefix; CONSENT_DATA_PATH).
    path: Optional[str] = None
    data_path: Optional[str] = None
    lock_timeout_seconds: Optional[float] = None
    # DuckDB's memory limit per connection (e.g. "4GB"; default 1GB) and where it spills what does
    # not fit (default: `.duckdb_tmp/` beside the warehouse): large runs spill, not grow.
    memory_limit: Optional[str] = None
    temp_directory: Optional[str] = None
    # DuckLake: how many days of snapshots the maintenance keeps (CONSENT_SNAPSHOT_RETENTION_DAYS; default 30).
    snapshot_retention_days: Optional[int] = None
    # Never in run config or the repository: set CONSENT_WAREHOUSE_KEY.
    encryption_key: Optional[str] = None
    # Salt of the phone hashes (suppression list, marts, audits); when neither this nor
    # CONSENT_HASH_SALT is set, a random salt kept in `<warehouse folder>/.hash_salt`
    # (never in the repository). Keep it stable.
    hash_salt: Optional[str] = None
    # Called with the run summary as JSON on stdin when a run or an ERROR check fails.
    alert_command: Optional[str] = None

    _run_lock: Optional[RunLock | NoRunLock] = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # A run (not a sensor) holds the run lock from its first step to its last, so
        # two runs never interleave their staging and publishing. A bucket run is a part of the
        # night that launched it (assets/buckets.py): that night holds the lock and finalises.
        if context.dagster_run is not None and context.dagster_run.job_name != BUCKET_JOB:
            self._run_lock = self.run_lock()
            self._run_lock.acquire()
            self.hold_writer()  # one DuckDB instance for the run's steps, not one per step

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """The run's last act, whatever launched it: record how it ended, then release the lock."""
        if self._run_lock is None:
            return
        try:
            from resources.finalise import finalise_run

            finalise_run(self.connect, self.file, context.instance, context.dagster_run.run_id, self.alert,
                         self.publish_read_copy)
        finally:
            self.release_writer()
            self._run_lock.release()
            self._run_lock = None



class ConsentSettings(dg.ConfigurableResource, SettingsAccess):
    """Where the exports are, which policy applies, and the run's clock.

    Unset fields come from the environment (CONSENT_EXPORTS, CONSENT_POLICY, CONSENT_WORKERS,
    CONSENT_AUDIENCES)."""

    exports_dir: Optional[str] = None
    policy_file: Optional[str] = None
    # Fixes "now" for windows and future-date checks (tests, back-fills). ISO 8601.
    as_of: Optional[str] = None
    # Rebuild every status from the ledger instead of only touched contacts.
    full: bool = False
    # Read every export file again, as if none had been seen (known hashes and fingerprints ignored).
    reread: bool = False
    # Worker processes for phone normalisation of large batches.
    workers: Optional[int] = None
    # Buckets the contacts are decided in, each in a transaction of its own (CONSENT_BUCKETS; 1 by default).
    buckets: Optional[int] = None
    # Audiences to check before a campaign (`audiences/` beside the exports folder by default).
    audiences_dir: Optional[str] = None


def resources_from_env(overrides: dict[str, dict] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The `warehouse` and `settings` resources of every entry point.

    Fields given in `overrides` (the CLI's flags, `{resource: {field: value}}`; None means
    "not given") are set; every other field is read from the environment when used (`SETTINGS`).
    """
    given = {name: {k: v for k, v in fields.items() if v is not None} for name, fields in (overrides or {}).items()}
    return {
        "warehouse": WarehouseResource(**given.get("warehouse", {})),
        "settings": ConsentSettings(**given.get("settings", {})),
    }


@dataclass(frozen=True)
class Schedule:
    """When the nightly run and the new-file sensor fire (deployment settings, not resources)."""

    nightly_cron: str
    nightly_timezone: str
    sensor_interval_seconds: int
    maintenance_cron: str = "0 4 * * *"


def schedule_from_env() -> Schedule:
    return Schedule(
        nightly_cron=os.environ.get("CONSENT_NIGHTLY_CRON", "0 2 * * *"),
        nightly_timezone=os.environ.get("CONSENT_NIGHTLY_TIMEZONE", "UTC"),
        sensor_interval_seconds=int(os.environ.get("CONSENT_SENSOR_INTERVAL_SECONDS", "60")),
        maintenance_cron=os.environ.get("CONSENT_MAINTENANCE_CRON", "0 4 * * *"),
    )
