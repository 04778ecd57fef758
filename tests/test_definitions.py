"""The whole Definitions loads; generic top-level modules come from this repository."""

from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parent.parent


def test_top_level_modules_import_from_this_repository():
    import assets
    import cli
    import consent
    import expectations
    import pipelines
    import resources

    for module in (assets, cli, consent, expectations, pipelines, resources):
        assert Path(module.__file__).resolve().is_relative_to(REPO), module.__file__


def test_domain_code_imports_no_dagster():
    for path in (REPO / "consent").rglob("*.py"):
        assert "dagster" not in path.read_text(), path


def test_definitions_hold_the_assets_checks_and_job():
    from pipelines.definitions import defs

    from consent import marts

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    # every mart of consent/marts is an asset (a new mart is its two files there, nothing here)
    assert keys == {
        "stg_consent_events", "consent_events", "quarantine", "skipped_items", "source_files",
        "consent_status", "consent_violations", "consent_status_history", "runs", "retention_purge", "message_statuses",
        "compliance_dashboard", "consent_notices", "identifier_links", "audience_checks", *marts.MARTS,
        "consent_status_bucket",  # a partition per person bucket, materialised by decide_buckets_job's steps
    }
    assert {"consent_daily", "send_audit", "opt_out_timeliness", "business_contacts"} <= set(marts.MARTS)
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {
        "staged_opt_ins_have_evidence", "ledger_rows_are_well_formed", "opted_in_rows_have_evidence",
        "rows_conserved", "every_file_read", "no_error_violations", "opt_in_notices_meet_policy", "notices_unchanged",
        "audiences_hold_no_opted_out", "keys_unique_and_not_null",
    }
    assert defs.resolve_job_def("consent_job").name == "consent_job"
    assert defs.resolve_job_def("audience_check_job").name == "audience_check_job"
    # the buckets of a night in processes of their own: one step per bucket, on the multiprocess executor
    buckets = defs.resolve_job_def("decide_buckets_job")
    assert buckets.executor_def.name == "multiprocess"
    bucket_asset = defs.resolve_asset_graph().get(dg.AssetKey("consent_status_bucket"))
    assert bucket_asset.partitions_def.get_partition_keys() == ["0"]  # CONSENT_BUCKETS unset: one bucket
    # the storage's upkeep: a job of its own, on a daily schedule that starts switched off like the nightly one
    assert defs.resolve_job_def("warehouse_maintenance").name == "warehouse_maintenance"
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"consent_schedule", "warehouse_maintenance_schedule"}
    upkeep = schedules["warehouse_maintenance_schedule"]
    assert upkeep.job_name == "warehouse_maintenance" and upkeep.cron_schedule == "0 4 * * *"
    assert upkeep.default_status == dg.DefaultScheduleStatus.STOPPED
    assert graph_group(defs, "audience_checks") == "audiences"
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("consent_status")).group_name == "warehouse"
    assert graph.get(dg.AssetKey("stg_consent_events")).group_name == "staging"


def graph_group(defs, key: str) -> str:
    return defs.resolve_asset_graph().get(dg.AssetKey(key)).group_name


def test_check_reports_failing_rows_by_lineage_not_by_number():
    import polars as pl

    from expectations import staged_opt_ins
    from expectations.runner import validate
    from consent.domain.policy import Policy

    staged = pl.DataFrame(
        {
            "event_type": ["opt_in", "opt_in", "opt_out"],
            "channel": ["web_form"] * 3,
            "phone_e164": ["+4915112345678", "+447400123456", "4471"],
            "consent_method": ["checkbox", None, None],
            "occurred_at": [None, None, None],
            "notice_version": ["v1", "v1", None],
            "source_file": ["web_form/a.csv"] * 3,
            "source_line": [2, 3, 4],
        },
        schema_overrides={"occurred_at": pl.Datetime("us")},
    )
    con = tables(**{"staging.stg_consent_events": staged})
    outcome = validate(con, staged_opt_ins.ROWS_SQL, staged_opt_ins.build_suite, "staged_opt_ins",
                       params=staged_opt_ins.rows_params(Policy()))
    failed = {r.column: r for r in outcome.errors}
    assert set(failed) == {"consent_method", "occurred_at"}  # the bad number is on the opt-out row
    assert failed["consent_method"].failing_rows == [{"source_file": "web_form/a.csv", "source_line": 3}]
    assert failed["occurred_at"].unexpected_count == 2  # the opt-out is not an opt-in
    assert "+44" not in repr(outcome)


def tables(**frames):
    """An in-memory DuckDB connection holding each frame as a table of that name (`schema.name` too)."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE SCHEMA staging")
    for name, frame in frames.items():
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.unregister("frame")
    return con


def test_status_and_ledger_suites_find_each_broken_row():
    """The suites run in DuckDB (GX's SQL engine): conditions, uniqueness and sets see every bad row."""
    from datetime import datetime

    import polars as pl

    from expectations import consent_events, consent_status
    from expectations.runner import validate
    from consent.domain.reconcile import STATUS_SCHEMA

    at = datetime(2026, 11, 1)
    status = pl.DataFrame(
        [
            ("+4915112345678", "marketing", "opted_in", True, at, "checkbox", at, "web_form", "v1", "e1", "f.csv", 2, None, None, None, "e1", "default", "+4915112345678", None),
            ("+4915112345678", "marketing", "opted_in", True, at, None, at, "web_form", None, "e2", "f.csv", 3, None, None, None, "e2", "default", "+4915112345678", None),
            ("+447400123456", "utility", "opted_out", False, at, None, None, None, None, None, None, None, at, "whatsapp", "e3", "e3", "default", "+447400123456", None),
            ("4471", "utility", "maybe", False, at, None, None, None, None, None, None, None, None, None, None, None, "default", "4471", None),
            # a contact known only by its BSUID: no number, nothing wrong
            (None, "marketing", "opted_out", False, at, None, None, None, None, None, None, None, at, "whatsapp", "e4", "e4", "default", "US.13491208655302741918", "US.13491208655302741918"),
            # the same number at another business is another contact
            ("+447400123456", "utility", "opted_out", False, at, None, None, None, None, None, None, None, at, "whatsapp", "e5", "e5", "acme_bank", "+447400123456", None),
        ],
        schema=STATUS_SCHEMA,
        orient="row",
    )
    outcome = validate(tables(consent_status=status), consent_status.rows_sql(), consent_status.build_suite, "consent_status")
    failed = {(r.expectation, r.column): r.unexpected_count for r in outcome.results if not r.success}
    assert failed == {
        ("expect_column_values_to_not_be_null", "consent_method"): 1,  # only the opted_in row lacking it
        ("expect_column_values_to_not_be_null", "notice_version"): 1,
        ("expect_column_values_to_be_in_set", "status"): 1,
        ("expect_column_values_to_be_in_set", "phone_is_e164"): 1,
        ("expect_compound_columns_to_be_unique", None): 2,
    }
    events = pl.DataFrame(
        {
            "event_id": ["a", "a", "b", None],
            "event_type": ["opt_in", "opt_in", "subscribe", "opt_out"],
            "channel": ["web_form"] * 4,
            "phone_e164": ["+4915112345678", "+4915112345678", "+4915112345678", "+12"],
            "acquisition_source": ["organic", "organic", "bought", "organic"],
            "source_file": ["f.csv"] * 4,
            "source_line": [2, 3, 4, None],
            "run_id": ["r1"] * 4,
        }
    )
    con = tables(consent_events=events)
    outcome = validate(con, consent_events.ROWS_SQL, consent_events.build_suite, "consent_events", params={"run_id": "r1"})
    failed = {(r.expectation, r.column): r.unexpected_count for r in outcome.results if not r.success}
    assert failed == {
        ("expect_column_values_to_not_be_null", "event_id"): 1,
        ("expect_column_values_to_be_unique", "event_id"): 2,
        ("expect_column_values_to_be_in_set", "event_type"): 1,
        ("expect_column_values_to_be_in_set", "acquisition_source"): 1,
        ("expect_column_values_to_be_in_set", "phone_is_e164"): 1,
        ("expect_column_values_to_not_be_null", "source_line"): 1,
    }
    # No rows (a night with nothing new): every expectation reported, passed, on 0 rows, the same
    # expectations a validation with rows reports.
    empty = validate(con, consent_events.ROWS_SQL, consent_events.build_suite, "consent_events", params={"run_id": "r2"})
    assert empty.row_count == 0 and empty.success and not empty.warnings
    assert [(r.expectation, r.column) for r in empty.results] == [(r.expectation, r.column) for r in outcome.results]
