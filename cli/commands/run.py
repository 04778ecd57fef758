"""`consent run`: the nightly job, in-process, with its progress on standard error."""

from __future__ import annotations

from cli.commands.run_report import _report
from cli.common import LOCK_HELP, WAREHOUSE_HELP, UsageError, _resources, _warn_if_unencrypted, add_command
from consent.storage.access import SettingsAccess


def register(sub) -> None:
    run = add_command(
        sub, "run", command_run, "ingest new exports, publish the ledger, reconcile consent status",
        "consent run --exports sample_exports --warehouse warehouse/consent.duckdb",
        "consent run --full --as-of 2026-11-10T00:00:00Z",
    )
    run.add_argument("--exports", help="exports folder, one subfolder per channel (default: CONSENT_EXPORTS or sample_exports)")
    run.add_argument("--warehouse", help=WAREHOUSE_HELP)
    run.add_argument("--as-of", dest="as_of", help="fix 'now' (ISO 8601, UTC if no offset)")
    run.add_argument("--policy", help="policy YAML (default: CONSENT_POLICY, or policy.yaml in the exports folder, if any)")
    run.add_argument("--full", action="store_true", help="rebuild every status from the ledger")
    run.add_argument("--reread", action="store_true",
                     help="read every export file again from scratch (what the ledger holds is not added twice)")
    run.add_argument("--workers", type=int,
                     help="processes for phone normalisation and, on DuckLake with --buckets above 1, for deciding "
                          "the buckets (default: CONSENT_WORKERS or up to 2)")
    run.add_argument("--buckets", type=int,
                     help="decide the contacts in this many person buckets, one transaction each: one after another, "
                          "or on DuckLake in --workers processes at a time (default: CONSENT_BUCKETS or 1: one "
                          "transaction)")
    run.add_argument("--lock-timeout", type=float, help=LOCK_HELP)
    run.add_argument(
        "--alert-command",
        help="command given the run summary as JSON on stdin when the run or an ERROR check fails (default: CONSENT_ALERT_COMMAND)",
    )


def _validate_inputs(settings: SettingsAccess) -> None:
    exports = settings.exports_path
    if not exports.is_dir():
        raise UsageError(f"exports folder not found: {exports}")
    if settings.setting("policy_file") and not settings.policy_path.exists():
        raise UsageError(f"policy file not found: {settings.policy_path}")
    settings.load_policy()
    settings.load_channels()
    try:
        settings.run_clock()
    except ValueError as exc:
        raise UsageError(f"--as-of: not an ISO 8601 timestamp: {settings.as_of!r}") from exc
    if settings.worker_count < 1:
        raise UsageError("--workers must be at least 1")
    if settings.bucket_count < 1:  # CONSENT_BUCKETS is read (and checked) before the run starts
        raise UsageError("--buckets must be at least 1")


def command_run(args) -> int:
    """Launch `consent_job` in-process, then print what the run recorded (the job finalises itself)."""
    resources = _resources(args, warn=False, dagster=True)
    _validate_inputs(resources["settings"])
    _warn_if_unencrypted(resources["warehouse"])
    # Dagster is imported only when a run starts: `consent --help` stays fast.
    from pipelines.definitions import build_definitions
    from cli.instance import run_instance
    from cli.progress import step_progress

    defs = build_definitions(resources)
    # DAGSTER_HOME's instance when set: the run is in the Dagster UI's history, with its assets and checks.
    with run_instance() as (instance, where), step_progress(instance) as run_id:
        result = defs.resolve_job_def("consent_job").execute_in_process(
            raise_on_error=False, instance=instance, run_id=run_id,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
    return _report(resources["warehouse"], result, where)
