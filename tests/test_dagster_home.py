"""`consent run` records its run in DAGSTER_HOME's Dagster instance, where the UI and the daemon look."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import query, run_cli

ASSETS = {"stg_consent_events", "consent_events", "consent_status", "consent_daily", "compliance_dashboard"}


def records(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list:
    return [r.event_log_entry.dagster_event for r in instance.get_records_for_run(run_id, of_type=kind).records]


def test_a_run_with_dagster_home_set_is_in_that_instances_history(exports, warehouse_path, tmp_path, monkeypatch, capsys):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert run_cli(exports, warehouse_path) == 0
    assert run_cli(exports, warehouse_path, as_of="2026-11-11T00:00:00Z") == 0
    out = capsys.readouterr().out
    assert out.count(f"dagster: run recorded in the Dagster instance at DAGSTER_HOME={home}") == 2
    ours = [r for (r,) in query(warehouse_path, "SELECT run_id FROM runs ORDER BY started_at")]
    with dg.DagsterInstance.get() as instance:  # what the UI opens from the same DAGSTER_HOME
        found = instance.get_run_records(dg.RunsFilter(job_name="consent_job"))
        assert sorted(r.dagster_run.run_id for r in found) == sorted(ours)
        assert {r.dagster_run.status for r in found} == {dg.DagsterRunStatus.SUCCESS}
        materialised = {e.asset_key.to_user_string() for e in records(instance, ours[0], dg.DagsterEventType.ASSET_MATERIALIZATION)}
        assert ASSETS <= materialised
        checks = {f"{e.asset_key.to_user_string()}.{e.check_name}": e.passed for e in
                  (d.event_specific_data for d in records(instance, ours[0], dg.DagsterEventType.ASSET_CHECK_EVALUATION))}
        ((outcomes,),) = query(warehouse_path, "SELECT check_outcomes FROM runs WHERE run_id = ?", [ours[0]])
        assert checks == {name: o["passed"] for name, o in json.loads(outcomes).items()}
        assert checks["source_files.rows_conserved"] is True and len(checks) >= 7
        # The Catalog: the asset's last materialisation is the second run's.
        latest = instance.get_latest_materialization_event(dg.AssetKey("consent_status"))
        assert latest is not None and latest.run_id == ours[1]
    assert (home / "history").is_dir()  # the sqlite run storage of a dagster.yaml-less home


def test_without_dagster_home_the_run_says_where_its_history_is(exports, warehouse_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert run_cli(exports, warehouse_path) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "DAGSTER_HOME" in line]
    assert len(lines) == 1
    assert "ephemeral Dagster instance" in lines[0] and "`consent runs`" in lines[0] and "export DAGSTER_HOME=" in lines[0]


@pytest.mark.parametrize("home, says", [
    ("relative/dagster_home", "must be an absolute path"),
    ("{tmp}/missing", "is not a directory or does not exist"),
])
def test_a_dagster_home_that_cannot_hold_runs_exits_2_in_one_line_before_the_run(
        exports, warehouse_path, tmp_path, monkeypatch, capsys, home, says):
    monkeypatch.setenv("DAGSTER_HOME", home.format(tmp=tmp_path))
    assert run_cli(exports, warehouse_path) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "CONSENT_WAREHOUSE_KEY" not in line]
    assert len(lines) == 1 and lines[0].startswith("consent: DAGSTER_HOME: ") and says in lines[0], captured.err
    assert not Path(warehouse_path).exists()
