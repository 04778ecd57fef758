"""Whatever starts a run, the same run: `consent run` and a Dagster launch end in the same state.

The Dagster side is launched the way a deployment does, in its own process
with a temporary DAGSTER_HOME: `dagster job execute -m pipelines.definitions
-j consent_job`, configured only by the environment (and the run config a
launchpad would give), with no help from the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AS_OF, query, run_cli

REPO = Path(__file__).resolve().parent.parent
DAGSTER = Path(sys.executable).with_name("dagster")
SALT = "salt-from-the-deployment"
UNDATED_OPT_IN = "phone,event_type,purposes,consent_method\n+4915201234568,opt_in,marketing,in_app_prompt\n"


def hook(received: Path) -> str:
    return f"{sys.executable} -c \"import sys; open({str(received)!r}, 'w').write(sys.stdin.read())\""


def dagster_execute(tmp_path: Path, exports: Path, warehouse: Path, alert_command: str | None = None) -> None:
    """Launch consent_job as a deployment does: its own process, environment, DAGSTER_HOME, run config."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    config = tmp_path / "run_config.yaml"
    # What a launchpad gives: one field of one resource; every other setting still comes from the environment.
    config.write_text(f"resources:\n  settings:\n    config:\n      as_of: '{AS_OF}'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(DAGSTER_HOME=str(home), CONSENT_EXPORTS=str(exports), CONSENT_WAREHOUSE=str(warehouse), CONSENT_HASH_SALT=SALT)
    if alert_command:
        env["CONSENT_ALERT_COMMAND"] = alert_command
    done = subprocess.run(
        [str(DAGSTER), "job", "execute", "-m", "pipelines.definitions", "-j", "consent_job", "-c", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def state(path: Path) -> dict[str, list]:
    """Everything a run leaves in the warehouse, without run ids and wall-clock times."""
    tables = {
        "consent_events": "SELECT * EXCLUDE (run_id, ingested_at) FROM consent_events",
        "quarantine": "SELECT * EXCLUDE (run_id, ingested_at) FROM quarantine",
        "skipped_items": "SELECT * EXCLUDE (run_id, ingested_at) FROM skipped_items",
        "message_statuses": "SELECT * EXCLUDE (run_id, ingested_at) FROM message_statuses",
        "source_files": "SELECT * EXCLUDE (first_seen_run, last_seen_run) FROM source_files",
        "consent_status": "SELECT * FROM consent_status",
        "consent_status_history": "SELECT * FROM consent_status_history",
        "consent_violations": "SELECT * FROM consent_violations",
        "consent_notices": "SELECT * EXCLUDE (run_id, loaded_at) FROM consent_notices",
        "suppression_list": "SELECT phone_hash, reason FROM suppression_list",
        "runs": "SELECT mode, as_of, status, files_seen, files_read, rows_read, events, new_events, quarantined, "
                "skipped, contacts_reconciled, checks_failed, finished_at IS NOT NULL, published_at IS NOT NULL, "
                "failure_reason, json_keys(check_outcomes) FROM runs",
    }
    marts = [t for (t,) in query(path, "SELECT table_name FROM duckdb_tables() WHERE table_name IN "
                                       "('consent_daily', 'consent_coverage', 'quarantine_summary', "
                                       "'violations_summary', 'send_audit', 'notice_usage')")]
    tables.update({mart: f"SELECT * FROM {mart}" for mart in marts})
    return {name: sorted(query(path, sql), key=repr) for name, sql in tables.items()}


def failed_checks_in_alert(folder: Path) -> list[str]:
    (alert,) = sorted(folder.glob("*.json"))
    return sorted(c["check"] for c in json.loads(alert.read_text())["failed_checks"])


def test_a_dagster_launched_run_ends_like_consent_run_including_a_failed_error_check(exports, tmp_path, monkeypatch, capsys):
    (exports / "in_app").mkdir()
    (exports / "in_app" / "undated.csv").write_text(UNDATED_OPT_IN)  # fails an ERROR check
    monkeypatch.setenv("CONSENT_HASH_SALT", SALT)
    by_cli, by_dagster = tmp_path / "cli" / "consent.duckdb", tmp_path / "dagster" / "consent.duckdb"
    received_cli, received_dagster = tmp_path / "alert_cli.json", tmp_path / "alert_dagster.json"

    assert run_cli(exports, by_cli, "--alert-command", hook(received_cli)) == 1
    assert "run FAILED" in capsys.readouterr().out
    dagster_execute(tmp_path, exports, by_dagster, hook(received_dagster))

    assert state(by_dagster) == state(by_cli)
    (row,) = query(by_dagster, "SELECT status, finished_at IS NOT NULL, checks_failed FROM runs")
    assert row[:2] == ("failed", True) and "staged_opt_ins_have_evidence" in row[2]
    # The alert: written beside the warehouse and given to the hook, by the run itself.
    for folder, received in ((by_cli.parent / "alerts", received_cli), (by_dagster.parent / "alerts", received_dagster)):
        assert failed_checks_in_alert(folder) == failed_checks_in_alert(by_cli.parent / "alerts")
        assert json.loads(received.read_text())["status"] == "failed"
    # The dashboard was rendered again after the checks: its last-run panel shows the failure.
    for warehouse in (by_cli, by_dagster):
        page = (warehouse.parent / "dashboard.html").read_text()
        assert "staged_opt_ins_have_evidence" in page and ">failed<" in page
    # The salt came from the environment in both: no salt file was made up beside either warehouse.
    assert not (by_cli.parent / ".hash_salt").exists() and not (by_dagster.parent / ".hash_salt").exists()


def test_an_erased_number_stays_out_of_a_dagster_launched_run_with_the_deployment_salt(exports, tmp_path, monkeypatch):
    from cli.main import main

    monkeypatch.setenv("CONSENT_HASH_SALT", SALT)
    warehouse = tmp_path / "wh" / "consent.duckdb"
    assert run_cli(exports, warehouse) == 0
    assert main(["erase", "+49 1520 1234567", "--warehouse", str(warehouse), "--exports", str(exports)]) == 0
    # The export that holds the number changes, so the next night reads it again.
    signups = exports / "web_form" / "signups_2026-11-01.csv"
    signups.write_text(signups.read_text() + "+4915201234599,opt_out,,2026-11-05T10:00:00Z,,,,,,\n")
    dagster_execute(tmp_path, exports, warehouse)
    assert query(warehouse, "SELECT count(*) FROM consent_events WHERE phone_e164 = '+4915201234567'") == [(0,)]
    assert query(warehouse, "SELECT count(*) FROM consent_status WHERE phone_e164 = '+4915201234567'") == [(0,)]
    assert query(warehouse, "SELECT count(*) FROM skipped_items WHERE reason LIKE 'erased number%'")[0][0] >= 1
    assert query(warehouse, "SELECT status FROM runs ORDER BY started_at DESC LIMIT 1") == [("succeeded",)]
    assert not (warehouse.parent / ".hash_salt").exists()


def test_every_entry_point_reads_the_same_settings(monkeypatch, tmp_path):
    """The CLI's resources and the Definitions' resources resolve every setting the same way."""
    from cli.main import _parser, _resources
    from pipelines.definitions import build_definitions
    from consent.storage.access import SETTINGS

    values = {"CONSENT_WAREHOUSE": str(tmp_path / "w.duckdb"), "CONSENT_WAREHOUSE_KEY": "k", "CONSENT_HASH_SALT": "s",
              "CONSENT_ALERT_COMMAND": "true", "CONSENT_LOCK_TIMEOUT_SECONDS": "7", "CONSENT_EXPORTS": str(tmp_path),
              "CONSENT_POLICY": str(tmp_path / "p.yaml"), "CONSENT_WORKERS": "3",
              "CONSENT_AUDIENCES": str(tmp_path / "aud"), "CONSENT_MEMORY_LIMIT": "1GB",
              "CONSENT_TEMP_DIRECTORY": str(tmp_path / "spill"), "CONSENT_DATA_PATH": str(tmp_path / "lake"),
              "CONSENT_SNAPSHOT_RETENTION_DAYS": "45", "CONSENT_BUCKETS": "4"}
    assert {s.variable for s in SETTINGS} == set(values)  # the test covers every setting
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    cli = _resources(_parser().parse_args(["run"]), warn=False)
    dagster = build_definitions().resources
    for resources in (cli, dagster):
        warehouse, settings = resources["warehouse"], resources["settings"]
        assert (warehouse.file, warehouse.key, warehouse.salt(), warehouse.alert, warehouse.lock_timeout) == (
            values["CONSENT_WAREHOUSE"], "k", "s", "true", 7.0)
        assert (str(settings.exports_path), str(settings.policy_path), settings.worker_count) == (
            str(tmp_path), values["CONSENT_POLICY"], 3)
        assert str(settings.audiences_path) == values["CONSENT_AUDIENCES"]
        assert (warehouse.setting("memory_limit"), warehouse.setting("temp_directory")) == ("1GB", str(tmp_path / "spill"))
        assert warehouse.retention_days == 45
        assert settings.bucket_count == 4
    # A flag overrides its variable, for this command only.
    flagged = _resources(_parser().parse_args(["run", "--warehouse", "other.duckdb", "--workers", "1"]), warn=False)
    assert (flagged["warehouse"].file, flagged["settings"].worker_count) == ("other.duckdb", 1)
    flagged = _resources(_parser().parse_args(["maintain", "--retention-days", "7"]), warn=False)
    assert flagged["warehouse"].retention_days == 7


def test_a_bad_setting_in_the_environment_is_a_configuration_error(monkeypatch, exports, warehouse_path, capsys):
    monkeypatch.setenv("CONSENT_WORKERS", "two")
    assert run_cli(exports, warehouse_path) == 2
    assert "CONSENT_WORKERS: not a int" in capsys.readouterr().err


def test_duckdb_has_a_memory_limit_unless_told_otherwise(monkeypatch, tmp_path):
    """Every connection spills past 1GB by default (DuckDB's own default is 80% of RAM), and prints
    no progress bar."""
    from consent.storage.access import Warehouse

    monkeypatch.delenv("CONSENT_MEMORY_LIMIT", raising=False)
    with Warehouse(path=str(tmp_path / "w.duckdb")).connect() as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "953.6 MiB"  # 1GB
        # and no DuckDB progress bar on stdout (a run's progress is its own lines on stderr)
        assert con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False
    monkeypatch.setenv("CONSENT_MEMORY_LIMIT", "3GiB")
    with Warehouse(path=str(tmp_path / "w.duckdb")).connect(read_only=True) as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "3.0 GiB"


def test_a_memory_limit_that_is_not_a_size_is_a_configuration_error(monkeypatch, exports, warehouse_path, capsys):
    monkeypatch.setenv("CONSENT_MEMORY_LIMIT", "lots")
    assert run_cli(exports, warehouse_path) == 2
    err = capsys.readouterr().err
    assert "CONSENT_MEMORY_LIMIT: not a memory size such as 2GB or 512MB: 'lots'" in err


@pytest.mark.parametrize("launch", ["cli", "dagster"])
def test_a_run_that_fails_in_a_step_records_its_end_and_alerts(exports, tmp_path, monkeypatch, launch, capsys):
    """A failed step: `runs` says failed with the reason, the dashboard is not left stale, an alert goes out.
    The reason is the error's first line: DuckDB's errors (an out-of-memory one, say) end with advice
    and a link, which alone would not say what went wrong."""
    from pipelines.definitions import build_definitions
    from resources.warehouse import ConsentSettings, WarehouseResource

    import assets.warehouse

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full\n\nPossible solutions:\n* free some space\n\n"
                           "See also https://duckdb.org/docs/stable/guides/performance/how_to_tune_workloads")

    monkeypatch.setattr(assets.warehouse, "publish", broken)
    warehouse = tmp_path / "wh" / "consent.duckdb"
    if launch == "cli":
        assert run_cli(exports, warehouse) == 1
        assert "step published_warehouse failed: the disk is full" in capsys.readouterr().err
    else:
        import dagster as dg

        resources = {"warehouse": WarehouseResource(path=str(warehouse)),
                     "settings": ConsentSettings(exports_dir=str(exports), as_of=AS_OF)}
        with dg.instance_for_test() as instance:
            result = build_definitions(resources).resolve_job_def("consent_job").execute_in_process(
                instance=instance, raise_on_error=False)
        assert not result.success
    ((status, finished, reason, published),) = query(
        warehouse, "SELECT status, finished_at IS NOT NULL, failure_reason, published_at FROM runs")
    assert (status, finished, published) == ("failed", True, None)
    assert "published_warehouse failed: the disk is full" in reason
    (alert,) = (warehouse.parent / "alerts").glob("*.json")
    assert "the disk is full" in json.loads(alert.read_text())["reason"]
