"""The bucket fan-out: a night's person buckets decided in processes of their own, by Dagster.

The job lives here, beside the assets, not in pipelines/: the publish step (assets/warehouse.py)
launches it, and a layer never imports the one above it.

A night on a DuckLake warehouse run with `--buckets N --workers W` (N, W > 1) publishes its ledger
in its own process (consent.run.publish.publish_ledger), then launches `decide_buckets_job`: a
step per bucket decides it on a connection of its own (consent.run.publish.decide_bucket_apart; a
transaction meeting a write conflict is retried whole). The job runs on Dagster's
multiprocess executor, W steps at a time: each bucket in a process of its own, one writer per
bucket by construction (a person's identifiers are all in one bucket). Each bucket decided is a
materialisation of a partition of `consent_status_bucket`, a partitioned asset whose partitions
are the buckets (static; their count is CONSENT_BUCKETS when the definitions load). A night that
touches fewer contacts than consent.run.publish.FAN_OUT_CONTACTS (a full run always fans out)
decides its buckets in its own process: a process's start-up would cost more than they do.

On a run launcher that starts runs on other machines (Kubernetes, Docker: docs/production.md), the
executor of this job is the one to change: `k8s_job_executor` or `docker_executor` put each bucket
on a machine of its own. The nightly job itself stays in-process: its other steps are cheap next to
a process's start-up, and a DuckDB file takes one writer.
"""

import os
from contextlib import contextmanager
from typing import Iterator

import dagster as dg

from consent.run.publish import UNDECIDED, decide_bucket_apart
from consent.storage.access import SETTINGS
from consent.storage.db import table_exists
from resources.finalise import root_message
from resources.warehouse import BUCKET_JOB, ConsentSettings, WarehouseResource

BUCKET_ASSET = "consent_status_bucket"


class FanOutError(RuntimeError):
    """A bucket of the fan-out failed: the run stops, and the next one decides every contact again."""


def bucket_partitions(buckets: int) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([str(b) for b in range(max(1, buckets))])


def bucket_asset(buckets: int) -> dg.AssetSpec:
    """The partitioned asset the fan-out materialises, a partition per bucket (reported by its steps)."""
    return dg.AssetSpec(
        BUCKET_ASSET, group_name="warehouse", kinds={"duckdb"}, partitions_def=bucket_partitions(buckets),
        description="The statuses, history and violations of one bucket of persons, decided by "
                    f"`{BUCKET_JOB}` in a process of its own (`consent run --buckets N --workers W` on DuckLake).",
    )


@dg.op(config_schema={"bucket": int, "buckets": int, "full": bool},
       description="One bucket's contacts replaced and decided again, in a transaction of its own "
                   "(retried whole on a write conflict); the contacts decided.")
def decide_bucket(context: dg.OpExecutionContext, warehouse: WarehouseResource, settings: ConsentSettings) -> int:
    bucket, buckets, full = (context.op_config[k] for k in ("bucket", "buckets", "full"))
    with warehouse.connect() as con:
        if not table_exists(con, UNDECIDED):
            raise FanOutError("no night is waiting for its buckets to be decided: this job is launched by "
                              "`consent run --buckets N --workers W` on a DuckLake warehouse, after its ledger")
        decided = decide_bucket_apart(con, policy=settings.load_policy(), full=full, bucket=bucket, buckets=buckets)
    context.log_event(dg.AssetMaterialization(
        asset_key=BUCKET_ASSET, partition=str(bucket),
        metadata={"contacts_decided": dg.MetadataValue.int(decided), "process": dg.MetadataValue.int(os.getpid())},
    ))
    return decided


def bucket_step(bucket: int) -> str:
    return f"bucket_{bucket}"


def bucket_job(buckets: int) -> dg.JobDefinition:
    """A step per bucket, none depending on another: the executor runs them `max_concurrent` at a
    time, each in a process of its own (a step per bucket rather than a dynamic fan-out: no step
    before or after them, so no process is started for anything but a bucket)."""

    @dg.job(name=BUCKET_JOB, executor_def=dg.multiprocess_executor,
            description="A night's person buckets decided in parallel processes, after its ledger is published "
                        "(launched by the nightly job's publish step on DuckLake with --buckets and --workers "
                        "above 1).")
    def decide_buckets_job():
        for bucket in range(buckets):
            decide_bucket.alias(bucket_step(bucket))()

    return decide_buckets_job


def reconstructed_bucket_job() -> dg.JobDefinition:
    """The job as each step's process rebuilds it, its resources and bucket count read from the
    environment (which `settings_in_environment` sets to the launching run's settings)."""
    from resources.warehouse import resources_from_env

    resources = resources_from_env()
    return dg.Definitions(jobs=[bucket_job(resources["settings"].bucket_count)],
                          resources=resources).resolve_job_def(BUCKET_JOB)


def fan_out_buckets_in_processes(instance: dg.DagsterInstance, warehouse: WarehouseResource,
                                 settings: ConsentSettings, *, buckets: int, workers: int, full: bool,
                                 parent_run_id: str | None = None) -> int:
    """Decide the night's `buckets` buckets in `workers` processes at a time (`decide_buckets_job` on
    the multiprocess executor); the contacts decided. Raises FanOutError when a bucket failed."""
    run_config = {
        "execution": {"config": {"max_concurrent": workers}},
        # The events go to the instance (the UI's Runs page), not to the night's terminal.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        "ops": {bucket_step(b): {"config": {"bucket": b, "buckets": buckets, "full": full}} for b in range(buckets)},
    }
    tags = {"consent/parent_run": parent_run_id} if parent_run_id else {}
    with settings_in_environment(warehouse, settings), run_instance_for(instance) as where:
        with dg.execute_job(dg.reconstructable(reconstructed_bucket_job), instance=where,
                            run_config=run_config, tags=tags) as result:
            if not result.success:
                failures = [event.event_specific_data.error for event in result.all_events
                            if event.event_type == dg.DagsterEventType.STEP_FAILURE]
                reason = root_message(failures[0]) if failures else "the bucket run failed"
                raise FanOutError(f"deciding the buckets in processes (run {result.run_id}): {reason}")
            return sum(int(result.output_for_node(bucket_step(b))) for b in range(buckets))


@contextmanager
def run_instance_for(instance: dg.DagsterInstance) -> Iterator[dg.DagsterInstance]:
    """The instance the bucket run goes to: the night's own, unless it is ephemeral (an ephemeral
    instance keeps events in memory, where the steps' processes cannot write them): a temporary one."""
    if not instance.is_ephemeral:
        yield instance
        return
    with dg.DagsterInstance.local_temp() as temporary:
        yield temporary


@contextmanager
def settings_in_environment(warehouse: WarehouseResource, settings: ConsentSettings) -> Iterator[None]:
    """Every setting of the launching run as the environment variable it is read from, while the
    bucket run's processes start (they inherit it): the same warehouse, catalog, data path, key,
    salt and policy, without writing a secret into the run's configuration."""
    saved = dict(os.environ)
    for setting in SETTINGS:
        for resource in (warehouse, settings):
            if setting.field in type(resource).model_fields:
                value = resource.setting(setting.field)
                if value is not None:
                    os.environ[setting.variable] = str(value)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
