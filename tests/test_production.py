"""What docs/production.md tells an operator to install, run as it is written there (deploy/)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType, TickStatus

from tests.conftest import FIXTURES, run_cli

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
INSTALLED = "/opt/consent-warehouse"  # where the unit files expect the checkout


def unit(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / "systemd" / name)
    return parser


def exec_start(name: str) -> list[str]:
    """The unit's command, for this checkout and this virtualenv instead of /opt/consent-warehouse."""
    command = shlex.split(unit(name)["Service"]["ExecStart"])
    command[0] = str(BIN / Path(command[0]).name)
    return [arg.replace(INSTALLED, str(REPO)) for arg in command]


def instance_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME with deploy/dagster.yaml, its run queue paused: a requested run stays queued."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    text = (DEPLOY / "dagster.yaml").read_text()
    assert "max_concurrent_runs: 1" in text
    (home / "dagster.yaml").write_text(text.replace("max_concurrent_runs: 1", "max_concurrent_runs: 0"))
    return home


def sensor_ticks(instance: dg.DagsterInstance, name: str) -> list:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name:
            return instance.get_ticks(state.instigator_origin_id, state.selector_id)
    return []


def stop(process: subprocess.Popen) -> int:
    """SIGINT to the daemon's process group (it and its code server), as systemd's KillSignal does."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()
    except ProcessLookupError:
        return process.wait()


def test_the_daemon_ticks_the_sensor_switched_on_and_queues_a_run_for_new_exports(tmp_path, monkeypatch):
    home = instance_home(tmp_path)
    exports = tmp_path / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    settled = time.time() - 120  # older than the sensor's 30 s: written completely
    files = [p for p in exports.rglob("*") if p.is_file()]
    for path in files:
        os.utime(path, (settled, settled))
    env = {**os.environ, "DAGSTER_HOME": str(home), "CONSENT_EXPORTS": str(exports),
           "CONSENT_WAREHOUSE": str(tmp_path / "wh" / "consent.duckdb"), "CONSENT_SENSOR_INTERVAL_SECONDS": "5"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get():  # creates the storage once (two processes at once would both migrate it)
        pass
    switch_on = [subprocess.Popen([str(BIN / "dagster"), kind, "start", name, "-w", "workspace.yaml"], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for kind, name in (("sensor", "new_exports_sensor"), ("schedule", "consent_schedule"))]
    try:
        outputs = [process.communicate(timeout=180)[0] for process in switch_on]
    finally:
        for process in switch_on:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, out, said in zip(switch_on, outputs, ("Started sensor new_exports_sensor", "Started schedule consent_schedule")):
        assert process.returncode == 0 and said in out, out
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(exec_start("consent-dagster-daemon.service"), cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, ticks = time.monotonic() + 90, []
        while time.monotonic() < deadline and daemon.poll() is None:
            with dg.DagsterInstance.get() as instance:
                ticks = [t for t in sensor_ticks(instance, "new_exports_sensor") if t.status != TickStatus.STARTED]
            if ticks:
                break
            time.sleep(1)
    finally:
        code = stop(daemon)
    assert ticks, log.read_text()[-3000:]
    assert code == 0, log.read_text()[-3000:]  # stopped cleanly, not killed
    (tick,) = ticks[-1:]
    assert tick.status == TickStatus.SUCCESS and len(tick.run_ids) == 1, tick
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(tick.run_ids[0])
        assert run.job_name == "consent_job" and run.status == dg.DagsterRunStatus.QUEUED
        assert run.tags["consent/new_files"] == str(len(files))
        (schedule,) = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
                       if s.instigator_name == "consent_schedule"]
        assert schedule.status == InstigatorStatus.RUNNING
        assert {"SENSOR", "SCHEDULER"} <= set(instance.get_daemon_heartbeats())


@pytest.mark.parametrize("name", ["consent-dagster-daemon.service", "consent-dagster-webserver.service"])
def test_the_unit_files_are_valid_for_systemd_and_read_the_shared_settings(tmp_path, name):
    service = unit(name)["Service"]
    assert service["EnvironmentFile"] == "/etc/consent-warehouse/consent.env"
    assert shlex.split(service["ExecStart"])[-2:] == ["-w", f"{INSTALLED}/workspace.yaml"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # This checkout in place of /opt/consent-warehouse: systemd checks every key and that ExecStart runs.
    text = (DEPLOY / "systemd" / name).read_text().replace(f"{INSTALLED}/.venv/bin", str(BIN)).replace(INSTALLED, str(REPO))
    copy = tmp_path / name
    copy.write_text(text.replace("/etc/consent-warehouse/consent.env", str(DEPLOY / "consent.env")))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_environment_file_names_only_settings_the_code_reads():
    from consent.storage.access import SETTINGS

    names = {line.split("=", 1)[0] for line in (DEPLOY / "consent.env").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    read = {s.variable for s in SETTINGS} | {"DAGSTER_HOME", "CONSENT_NIGHTLY_CRON", "CONSENT_NIGHTLY_TIMEZONE",
                                                   "CONSENT_SENSOR_INTERVAL_SECONDS", "CONSENT_MAINTENANCE_CRON"}
    assert names <= read, names - read


def test_the_journal_alert_script_gets_a_failed_runs_summary(exports, warehouse_path, tmp_path, monkeypatch):
    """CONSENT_ALERT_COMMAND=deploy/alert-to-journal.sh: one journal entry (priority err) per failed run."""
    fake = tmp_path / "bin"
    fake.mkdir()
    received = tmp_path / "logger.args"
    (fake / "logger").write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {received}\n')
    (fake / "logger").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    (exports / "web_form" / "no_method.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method\n+4915201234571,opt_in,marketing,2026-11-05T09:00:00Z,\n")
    assert run_cli(exports, warehouse_path, "--alert-command", str(DEPLOY / "alert-to-journal.sh")) == 1
    args = received.read_text().splitlines()
    assert args[:5] == ["-t", "consent-alert", "-p", "user.err", "--"]
    (message,) = args[5:]  # one entry, whatever the JSON's lines
    assert message.startswith("consent run failed: {") and '"status": "failed"' in message
    assert "staged_opt_ins_have_evidence" in message and "15201234571" not in message
