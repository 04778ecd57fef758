"""Nightly operation: schedule, new-file sensor, incremental runs, cache, alerts, run history."""

import json
import os
import shutil
import sys
import time

import dagster as dg

from tests.conftest import query, run_cli


def test_schedule_and_sensors_are_in_the_definitions_with_the_configured_cron(monkeypatch):
    from pipelines.definitions import build_definitions

    monkeypatch.setenv("CONSENT_NIGHTLY_CRON", "30 3 * * *")
    monkeypatch.setenv("CONSENT_NIGHTLY_TIMEZONE", "Europe/Berlin")
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("consent_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 3 * * *", "Europe/Berlin")
    assert schedule.job_name == "consent_job"
    monkeypatch.setenv("CONSENT_MAINTENANCE_CRON", "15 5 * * 0")
    upkeep = build_definitions().resolve_schedule_def("warehouse_maintenance_schedule")
    assert (upkeep.cron_schedule, upkeep.execution_timezone, upkeep.job_name) == (
        "15 5 * * 0", "Europe/Berlin", "warehouse_maintenance")
    assert {s.name for s in defs.sensors} == {"new_exports_sensor", "new_audiences_sensor", "alert_on_unfinished_run"}


def test_default_schedule_is_two_in_the_morning_utc():
    from pipelines.definitions import defs

    schedule = defs.resolve_schedule_def("consent_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")


def test_sensor_requests_one_run_per_batch_of_new_or_changed_files(exports):
    from resources.warehouse import ConsentSettings
    from pipelines.sensors import build_new_exports_sensor

    old = time.time() - 3600
    for path in exports.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    sensor = build_new_exports_sensor()
    settings = ConsentSettings(exports_dir=str(exports))

    context = dg.build_sensor_context(resources={"settings": settings})
    first = sensor(context)
    assert isinstance(first, dg.RunRequest)  # five files, one run
    assert first.tags["consent/new_files"] == "5"

    context = dg.build_sensor_context(cursor=context.cursor, resources={"settings": settings})
    assert isinstance(sensor(context), dg.SkipReason)  # nothing new

    new_file = exports / "web_form" / "more.csv"
    new_file.write_text("phone,event_type\n+4915112345678,opt_out\n")
    os.utime(new_file, (old, old))
    context = dg.build_sensor_context(cursor=context.cursor, resources={"settings": settings})
    again = sensor(context)
    assert isinstance(again, dg.RunRequest) and again.tags["consent/new_files"] == "1"

    fresh = exports / "web_form" / "being_written.csv"
    fresh.write_text("phone,event_type\n")  # just written: waits until it settles
    context = dg.build_sensor_context(cursor=context.cursor, resources={"settings": settings})
    assert isinstance(sensor(context), dg.SkipReason)


def test_adding_one_file_processes_only_its_rows(exports, warehouse_path, after_first_run):
    (exports / "web_form" / "late.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method,notice_version\n"
        "+4915201234571,opt_in,marketing,2026-11-05T10:00:00Z,checkbox,web-v3\n"
    )
    assert run_cli(exports, warehouse_path) == 0
    last = query(warehouse_path, "SELECT files_read, rows_read, new_events, contacts_reconciled FROM runs ORDER BY published_at DESC LIMIT 1")
    assert last == [(1, 1, 1, 1)]


def test_phone_numbers_seen_before_are_not_parsed_again(exports, warehouse_path, after_first_run):
    cached = query(warehouse_path, "SELECT count(*) FROM phone_cache")[0][0]
    assert cached > 0
    (exports / "web_form" / "again.csv").write_text("phone,event_type\n+49 151 1234 5678,opt_out\n")
    assert run_cli(exports, warehouse_path) == 0
    seconds = json.loads(query(warehouse_path, "SELECT step_seconds FROM runs ORDER BY published_at DESC LIMIT 1")[0][0])
    assert (seconds["phone_cache_hits"], seconds["phone_cache_misses"]) == (1, 0)


def test_new_phonenumbers_metadata_version_invalidates_the_cache(exports, warehouse_path, after_first_run, monkeypatch):
    import consent.run.staging

    monkeypatch.setattr(consent.run.staging, "METADATA_VERSION", "99.0.0")
    (exports / "web_form" / "again.csv").write_text("phone,event_type\n+49 151 1234 5678,opt_out\n")
    assert run_cli(exports, warehouse_path) == 0
    seconds = json.loads(query(warehouse_path, "SELECT step_seconds FROM runs ORDER BY published_at DESC LIMIT 1")[0][0])
    assert (seconds["phone_cache_hits"], seconds["phone_cache_misses"]) == (0, 1)


CACHE_KEYS = ("SELECT count(*), count(DISTINCT (phone_raw, country_hint, metadata_version)), "
              "count(*) FILTER (WHERE metadata_version = '99.0.0') FROM phone_cache")


def test_the_phone_cache_keeps_one_row_per_key_without_an_index(exports, warehouse_path, after_first_run, monkeypatch):
    """Schema version 7: no primary key on phone_cache; the insert adds only keys it does not hold,
    whatever the run (a night repeating cached spellings beside new ones, a --full rerun, a new
    metadata version)."""
    import consent.run.staging

    assert query(warehouse_path, "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'phone_cache' "
                                 "AND constraint_type = 'PRIMARY KEY'") == [(0,)]
    (first,) = query(warehouse_path, CACHE_KEYS)
    assert first[0] == first[1] > 0
    (exports / "web_form" / "again.csv").write_text(
        "phone,event_type\n+49 151 1234 5678,opt_out\n+49 151 1234 5678,opt_out\n"
        "+49 151 1234 5690,opt_out\n+49 151 1234 5690,opt_out\n0151 12345691,opt_out\n"
    )
    assert run_cli(exports, warehouse_path) == 0
    assert run_cli(exports, warehouse_path, "--full") == 0
    (rows, keys, _), = query(warehouse_path, CACHE_KEYS)
    assert rows == keys == first[0] + 2  # two new spellings, each once
    monkeypatch.setattr(consent.run.staging, "METADATA_VERSION", "99.0.0")  # the same spellings, parsed afresh
    shutil.copy(exports / "web_form" / "again.csv", exports / "web_form" / "again_later.csv")
    with (exports / "web_form" / "again_later.csv").open("a") as later:
        later.write("+49 151 1234 5692,opt_out\n")
    assert run_cli(exports, warehouse_path) == 0
    (rows, keys, newer), = query(warehouse_path, CACHE_KEYS)
    assert rows == keys == first[0] + 2 + 4 and newer == 4


def test_a_phone_cache_key_held_twice_stops_the_run_and_says_what_to_do(exports, warehouse_path, after_first_run, capsys):
    """Without an index nothing in DuckDB refuses a second row for a key (written by hand, or by a
    faulty tool): a lookup that meets one stops the run before any event is built from it."""
    import duckdb

    con = duckdb.connect(str(warehouse_path))
    con.execute("INSERT INTO phone_cache SELECT * REPLACE ('+4915100000000' AS phone_e164) FROM phone_cache "
                "WHERE phone_raw = '+49 151 1234 5678'")
    con.close()
    events = query(warehouse_path, "SELECT count(*) FROM consent_events")
    (exports / "web_form" / "again.csv").write_text("phone,event_type\n+49 151 1234 5678,opt_out\n")
    capsys.readouterr()
    assert run_cli(exports, warehouse_path) != 0
    err = capsys.readouterr().err
    assert "phone cache holds 1 key(s) of this run more than once" in err and "DELETE FROM phone_cache" in err
    assert query(warehouse_path, "SELECT count(*) FROM consent_events") == events
    assert query(warehouse_path, "SELECT count(*) FROM consent_events WHERE phone_e164 = '+4915100000000'") == [(0,)]
    con = duckdb.connect(str(warehouse_path))
    con.execute("DELETE FROM phone_cache")
    con.close()
    assert run_cli(exports, warehouse_path) == 0  # as the message says
    assert query(warehouse_path, "SELECT count(*) FROM consent_events") == [(events[0][0] + 1,)]


def test_failing_run_calls_the_alert_hook_and_writes_the_summary(exports, warehouse_path, tmp_path, capsys):
    (exports / "in_app").mkdir()
    (exports / "in_app" / "undated.csv").write_text(
        "phone,event_type,purposes,consent_method\n+4915201234568,opt_in,marketing,in_app_prompt\n"
    )
    received = tmp_path / "hook_input.json"
    hook = f"{sys.executable} -c \"import sys; open({str(received)!r}, 'w').write(sys.stdin.read())\""
    assert run_cli(exports, warehouse_path, "--alert-command", hook) == 1
    summary = json.loads(received.read_text())
    assert summary["status"] == "failed"
    assert any(c["check"].endswith("staged_opt_ins_have_evidence") for c in summary["failed_checks"])
    assert summary["per_channel"]["in_app"]["rows_read"] == 1
    alerts = list((warehouse_path.parent / "alerts").glob("*.json"))
    assert len(alerts) == 1 and json.loads(alerts[0].read_text())["run_id"] == summary["run_id"]
    assert "4915201234568" not in received.read_text()


def test_successful_run_raises_no_alert(exports, warehouse_path, tmp_path):
    received = tmp_path / "hook_input.json"
    hook = f"{sys.executable} -c \"open({str(received)!r}, 'w').write('called')\""
    assert run_cli(exports, warehouse_path, "--alert-command", hook) == 0
    assert not received.exists()
    assert not (warehouse_path.parent / "alerts").exists()


def test_runs_command_prints_the_history(exports, warehouse_path, after_first_run, capsys):
    from cli.main import main

    assert run_cli(exports, warehouse_path) == 0
    capsys.readouterr()
    assert main(["runs", "--warehouse", str(warehouse_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["run", "mode", "as", "of"]
    assert len(lines) == 3 and all("succeeded" in line for line in lines[1:])


def test_a_run_launched_by_dagster_alerts_on_a_failed_error_check_by_itself(exports, warehouse_path, tmp_path):
    """Runs started by the schedule or the UI finalise themselves: no sensor is needed for the alert."""
    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource

    (exports / "in_app").mkdir()
    (exports / "in_app" / "undated.csv").write_text(
        "phone,event_type,purposes,consent_method\n+4915201234568,opt_in,marketing,in_app_prompt\n"
    )
    received = tmp_path / "hook_input.json"
    resources = {
        "warehouse": WarehouseResource(
            path=str(warehouse_path),
            alert_command=f"{sys.executable} -c \"import sys; open({str(received)!r}, 'w').write(sys.stdin.read())\"",
        ),
        "settings": ConsentSettings(exports_dir=str(exports), as_of="2026-11-10T00:00:00Z"),
    }
    with dg.instance_for_test() as instance:
        result = build_definitions(resources).resolve_job_def("consent_job").execute_in_process(instance=instance)
    assert result.success  # checks do not fail the Dagster run; the run records and alerts
    summary = json.loads(received.read_text())
    assert summary["run_id"] == result.run_id
    assert [c["check"] for c in summary["failed_checks"]][0].endswith("staged_opt_ins_have_evidence")
    status, finished, failed = query(
        warehouse_path, "SELECT status, finished_at IS NOT NULL, checks_failed FROM runs WHERE run_id = ?", [result.run_id]
    )[0]
    assert (status, finished) == ("failed", True) and "staged_opt_ins_have_evidence" in failed


def test_the_unfinished_run_sensor_alerts_only_for_runs_that_did_not_record_their_end(exports, warehouse_path, tmp_path):
    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource
    from pipelines.sensors import alert_on_unfinished_run

    warehouse = WarehouseResource(path=str(warehouse_path))
    resources = {"warehouse": warehouse, "settings": ConsentSettings(exports_dir=str(exports), as_of="2026-11-10T00:00:00Z")}
    alerts = warehouse_path.parent / "alerts"
    with dg.instance_for_test() as instance:
        finished = build_definitions(resources).resolve_job_def("consent_job").execute_in_process(instance=instance)
        # A run that never reached the warehouse (killed, or its lock timed out) has no finished row.
        unfinished = instance.create_run_for_job(build_definitions(resources).resolve_job_def("consent_job"))
        for run in (instance.get_run_by_id(finished.run_id), unfinished):
            with dg.build_run_status_sensor_context(
                sensor_name="alert_on_unfinished_run",
                dagster_event=finished.get_run_success_event(),  # the sensor reads only the run and its message
                dagster_instance=instance,
                dagster_run=run,
                resources=resources,
            ).for_run_failure() as context:
                alert_on_unfinished_run(context)
    written = sorted(p.name for p in alerts.glob("*.json")) if alerts.exists() else []
    assert len(written) == 1 and written[0].endswith(f"-{unfinished.run_id[:8]}.json")


def test_unchanged_files_are_not_hashed_again_but_changed_ones_are(exports, warehouse_path, monkeypatch):
    """Exports accumulate: a night re-reads only files whose size or modification or status-change
    time changed (a file is hashed as it is read)."""
    import consent.reading.ingest as ingest

    hashed: list[str] = []
    real_read = ingest.read_export
    monkeypatch.setattr(ingest, "read_export", lambda export: hashed.append(export.path.name) or real_read(export))
    monkeypatch.setattr(ingest, "RACY_NS", 0)  # the fixture files were written just now: trust them anyway
    assert run_cli(exports, warehouse_path) == 0
    assert len(hashed) == 5  # first run: every file

    hashed.clear()
    assert run_cli(exports, warehouse_path) == 0
    assert hashed == []  # nothing changed: nothing hashed

    changed = next((exports / "web_form").glob("*.csv"))
    changed.write_text(changed.read_text() + "+447400123456,GB,opt_out,marketing,2026-11-05T10:00:00Z,,,,,,\n")
    assert run_cli(exports, warehouse_path) == 0
    assert hashed == [changed.name]
    assert query(warehouse_path, "SELECT count(*) FROM consent_events WHERE occurred_at = '2026-11-05 10:00:00'") == [(1,)]

    hashed.clear()
    assert run_cli(exports, warehouse_path, "--full") == 0
    assert len(hashed) == 5  # a full run trusts no fingerprint
