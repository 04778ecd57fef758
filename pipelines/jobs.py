"""Jobs: the nightly reconciliation, every asset and check in one run."""

import dagster as dg

consent_job = dg.define_asset_job(
    "consent_job",
    selection=dg.AssetSelection.groups("staging", "warehouse"),
    description="Read new exports, publish the ledger and reconcile consent status, in-process.",
    executor_def=dg.in_process_executor,
)
