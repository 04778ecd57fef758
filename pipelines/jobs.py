"""Jobs: the nightly reconciliation, every asset and check in one run."""

import dagster as dg

consent_job = dg.define_asset_job(
    "consent_job",
    selection=dg.AssetSelection.groups("staging", "warehouse", "privacy", "marts"),
    description="Read new exports, publish the ledger, reconcile consent status, apply retention, build marts and the dashboard; in-process.",
    executor_def=dg.in_process_executor,
)

audience_check_job = dg.define_asset_job(
    "audience_check_job",
    selection=dg.AssetSelection.groups("audiences"),
    description="Check every new audience file before a campaign: sendable rows and decisions to "
    "<warehouse folder>/checked/, each check logged; fails (alerts) when an audience holds an opted-out contact.",
    executor_def=dg.in_process_executor,
)
