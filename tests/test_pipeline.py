"""End to end through the CLI and Dagster, on a DuckDB file per test."""

import shutil
from pathlib import Path

import pytest

from tests.conftest import AS_OF, FIXTURES, query, run_cli, statuses


def test_fixture_run_decides_every_contact_by_the_rules(exports, warehouse_path, capsys):
    assert run_cli(exports, warehouse_path) == 0
    got = statuses(warehouse_path)
    assert got[("+4915201234567", "marketing")] == "opted_in"  # valid web form opt-in (notice missing: warning)
    assert got[("+4915112345678", "marketing")] == "opted_out"  # failed send, error 131050
    assert got[("+4915112345678", "utility")] == "opted_out"  # preference centre
    assert got[("+447400123456", "marketing")] == "opted_out"  # " Stop. " keyword
    assert got[("+447400123456", "utility")] == "opted_out"  # keyword covers all purposes
    assert got[("+12015550123", "marketing")] == "no_consent"  # pre-ticked box
    assert got[("+33612345678", "marketing")] == "expired"  # bought list; DOI request never confirmed
    assert got[("+5511961234567", "marketing")] == "opted_out"  # DOI confirmed, then "Stop promotions"
    assert got[("+918123456789", "marketing")] == "opted_out"  # resume without earlier opt-in
    out = capsys.readouterr().out
    assert "web_form" in out and "whatsapp" in out and "run succeeded" in out


def test_every_file_conserves_its_rows(exports, warehouse_path, after_first_run):
    files = query(warehouse_path, "SELECT source_file, rows_read, events, quarantined, skipped FROM source_files")
    assert len(files) == 5
    for source_file, rows_read, events, quarantined, skipped in files:
        assert rows_read == events + quarantined + skipped, source_file
    counts = {f[0]: f[1:] for f in files}
    assert counts["web_form/signups_2026-11-01.csv"] == (8, 5, 3, 0)
    assert counts["whatsapp/webhooks_2026-11-03.json"] == (5, 4, 0, 1)
    assert counts["whatsapp/webhooks_2026-11-04.jsonl"] == (5, 3, 2, 0)
    ledger = query(warehouse_path, "SELECT count(*) FROM consent_events")[0][0]
    quarantine = query(warehouse_path, "SELECT count(*) FROM quarantine")[0][0]
    # 16 events read, one of them a redelivered webhook: 15 in the ledger.
    assert (ledger, quarantine) == (15, 5)


def _tables(path: Path) -> dict[str, list]:
    return {
        "events": query(path, "SELECT * EXCLUDE (run_id, ingested_at) FROM consent_events ORDER BY event_id"),
        "quarantine": query(path, "SELECT * EXCLUDE (run_id, ingested_at) FROM quarantine ORDER BY quarantine_id"),
        "status": query(path, "SELECT * FROM consent_status ORDER BY ALL"),
        "violations": query(path, "SELECT * FROM consent_violations ORDER BY ALL"),
        "history": query(path, "SELECT * FROM consent_status_history ORDER BY ALL"),
    }


def test_second_run_over_unchanged_exports_reads_nothing_and_changes_nothing(exports, warehouse_path, after_first_run):
    before = _tables(warehouse_path)
    assert run_cli(exports, warehouse_path) == 0
    assert _tables(warehouse_path) == before
    last = query(warehouse_path, "SELECT files_read, rows_read, new_events FROM runs ORDER BY published_at DESC LIMIT 1")
    assert last == [(0, 0, 0)]


def test_same_file_under_another_name_adds_nothing(exports, warehouse_path, after_first_run):
    before = _tables(warehouse_path)
    shutil.copy(exports / "web_form" / "signups_2026-11-01.csv", exports / "web_form" / "signups_copy.csv")
    # The same rows re-exported in another column order are the same events too.
    lines = (exports / "preference_center" / "optouts.csv").read_text().splitlines()
    reordered = [",".join(reversed(line.split(","))) for line in lines]
    (exports / "preference_center" / "optouts_reexport.csv").write_text("\n".join(reordered) + "\n")
    assert run_cli(exports, warehouse_path) == 0
    assert _tables(warehouse_path)["events"] == before["events"]
    assert _tables(warehouse_path)["status"] == before["status"]


def test_an_event_id_already_in_the_ledger_fails_the_run(exports, warehouse_path, after_first_run, monkeypatch, capsys):
    """The ledger has no primary-key index: append_ledger.sql keeps event ids unique, and
    the ERROR check catches a run that would add one the ledger holds (here: the de-duplication
    removed from the SQL, and the same rows re-exported in another column order)."""
    from consent.storage import sql

    real = sql.statements
    no_dedup = (
        "INSERT INTO consent_events BY NAME SELECT * FROM staging.stg_consent_events",
        *real("append_ledger")[1:],
    )
    monkeypatch.setattr(sql, "statements", lambda name: no_dedup if name == "append_ledger" else real(name))
    lines = (exports / "preference_center" / "optouts.csv").read_text().splitlines()
    reordered = [",".join(reversed(line.split(","))) for line in lines]  # another file, the same events
    (exports / "preference_center" / "optouts_reexport.csv").write_text("\n".join(reordered) + "\n")
    capsys.readouterr()
    assert run_cli(exports, warehouse_path) == 1
    assert "ledger_rows_are_well_formed" in capsys.readouterr().out




# Tables without a primary-key index (schema version 9) whose ids the append keeps unique.
APPENDED_IDS = {
    "quarantine": "SELECT quarantine_id FROM quarantine",
    "skipped_items": "SELECT skipped_id FROM skipped_items",
    "message_statuses": "SELECT message_id, status FROM message_statuses",
}


def _ids(warehouse_path: Path) -> dict[str, list]:
    return {table: sorted(query(warehouse_path, sql)) for table, sql in APPENDED_IDS.items()}


def _statuses_delivered_again(exports: Path, warehouse_path: Path) -> dict[str, list]:
    """A run of the fixture exports with a statuses webhook, then the same statuses in another file
    (in reverse order: another file to read, the same message ids and statuses). The ids before."""
    statuses = FIXTURES / "sends" / "whatsapp" / "statuses_2026-11-06.jsonl"
    shutil.copy(statuses, exports / "whatsapp")
    assert run_cli(exports, warehouse_path) == 0
    lines = statuses.read_text().splitlines()
    (exports / "whatsapp" / "statuses_redelivered.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    return _ids(warehouse_path)


def test_statuses_delivered_again_in_another_file_add_no_status_row(exports, warehouse_path):
    before = _statuses_delivered_again(exports, warehouse_path)
    assert all(before.values())
    assert run_cli(exports, warehouse_path) == 0
    after = _ids(warehouse_path)
    assert after["message_statuses"] == before["message_statuses"]  # the same statuses, once
    assert after["quarantine"] == before["quarantine"]
    assert len(after["skipped_items"]) > len(before["skipped_items"])  # the new file's lineage is kept
    for table, ids in after.items():
        assert len(set(ids)) == len(ids), table


def test_an_id_held_twice_fails_the_run(exports, warehouse_path, monkeypatch, capsys):
    """The append without its de-duplication (every staged row inserted): the statuses delivered
    again are held twice, and the ERROR check fails the run."""
    from consent.storage import sql

    _statuses_delivered_again(exports, warehouse_path)
    real = sql.statements
    plain = (real("append_ledger")[0], *(f"INSERT INTO {t} BY NAME SELECT * FROM {s}" for t, s in (
        ("quarantine", "staging.stg_quarantine"), ("skipped_items", "staging.stg_skipped"),
        ("message_statuses", "staging.stg_message_statuses"))))
    monkeypatch.setattr(sql, "statements", lambda name: plain if name == "append_ledger" else real(name))
    capsys.readouterr()
    assert run_cli(exports, warehouse_path) == 1
    assert "ledger_rows_are_well_formed" in capsys.readouterr().out

@pytest.mark.parametrize("table", ["consent_status", "consent_violations"])
def test_a_decision_written_twice_fails_the_run(exports, warehouse_path, monkeypatch, capsys, table):
    """consent_status and consent_violations have no primary-key index (schema version 6): one row
    per key is kept by construction and checked by an ERROR check (here: a range's rows of one table
    written twice). The same night's rows pass the check when written once."""
    import consent.run.decide as decide

    real = decide.write_frame

    def write_twice(con, name, frame, **kwargs):
        real(con, name, frame, **kwargs)
        if name == table:
            real(con, name, frame, **kwargs)

    monkeypatch.setattr(decide, "write_frame", write_twice)
    capsys.readouterr()
    assert run_cli(exports, warehouse_path) == 1
    assert "opted_in_rows_have_evidence" in capsys.readouterr().out
    monkeypatch.setattr(decide, "write_frame", real)
    assert run_cli(exports, warehouse_path, "--full") == 0


def test_a_night_that_writes_an_opted_in_status_without_evidence_fails(tmp_path, exports, monkeypatch, capsys):
    """The status check of a night validates the statuses it decided (kept as written,
    `stg_decided_status`): an opted_in row without its consent method, written by a faulty state
    machine to the table and its copy alike, fails the run."""
    import polars as pl

    import consent.run.decide as decide

    path, staged = tmp_path / "wh.duckdb", tmp_path / "staged"
    first, second = _nights(exports)
    for folder in first:
        shutil.copytree(exports / folder, staged / folder)
    assert run_cli(staged, path) == 0
    for folder in second:
        shutil.copytree(exports / folder, staged / folder)
    real = decide.write_frame

    def without_method(con, name, frame, **kwargs):
        if name in ("consent_status", "staging.stg_decided_status"):
            frame = frame.with_columns(
                pl.when(pl.col("status") == "opted_in").then(None).otherwise(pl.col("consent_method")).alias("consent_method"))
        real(con, name, frame, **kwargs)

    monkeypatch.setattr("consent.run.decide_sql.SQL_DECISIONS", False)  # every status through write_frame
    monkeypatch.setattr(decide, "write_frame", without_method)
    capsys.readouterr()
    assert run_cli(staged, path) == 1
    assert query(path, "SELECT count(*) FROM staging.stg_decided_status WHERE status = 'opted_in'")[0][0] > 0
    assert "opted_in_rows_have_evidence" in capsys.readouterr().out


@pytest.mark.parametrize("full", [False, True])
def test_a_run_deciding_every_contact_validates_every_status_row(tmp_path, exports, monkeypatch, capsys, full):
    """A first run and a `--full` run keep no copy of what they decide: the status check reads the
    whole table (every row is theirs), and an opted_in row without its consent method fails them."""
    import polars as pl

    import consent.run.decide as decide

    path = tmp_path / "wh.duckdb"
    if full:
        assert run_cli(exports, path) == 0
    real = decide.write_frame

    def without_method(con, name, frame, **kwargs):
        if name == "consent_status":
            frame = frame.with_columns(
                pl.when(pl.col("status") == "opted_in").then(None).otherwise(pl.col("consent_method")).alias("consent_method"))
        real(con, name, frame, **kwargs)

    monkeypatch.setattr("consent.run.decide_sql.SQL_DECISIONS", False)  # every status through write_frame
    monkeypatch.setattr(decide, "write_frame", without_method)
    capsys.readouterr()
    assert run_cli(exports, path, *(["--full"] if full else [])) == 1
    assert "opted_in_rows_have_evidence" in capsys.readouterr().out
    assert query(path, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'stg_decided_status'") == [(0,)]


@pytest.mark.parametrize("returning", [True, False])
def test_a_night_sets_aside_exactly_the_rows_it_decides_again(tmp_path, exports, monkeypatch, returning):
    """A night deletes the touched contacts' statuses, history and violations and keeps them as
    `stg_replaced_*` (what the status check and the marts built by difference compare with): with
    `DELETE ... RETURNING` on a small night, by reading then deleting in SQL on a large one
    (`RETURNING_CONTACTS`, here 0 to take that way). Both keep exactly the rows the tables held for
    those contacts, and leave the tables as a full run does."""
    import duckdb

    import consent.run.scope as scope

    if not returning:
        monkeypatch.setattr(scope, "RETURNING_CONTACTS", 0)
    path, staged = tmp_path / "wh.duckdb", tmp_path / "staged"
    first, second = _nights(exports)
    for folder in first:
        shutil.copytree(exports / folder, staged / folder)
    assert run_cli(staged, path) == 0
    tables = ("consent_status", "consent_status_history", "consent_violations")
    con = duckdb.connect(str(path), read_only=True)
    before = {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    columns = {t: [r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()] for t in tables}
    con.close()
    for folder in second:
        shutil.copytree(exports / folder, staged / folder)
    assert run_cli(staged, path) == 0
    touched = {tuple(k.split(chr(31))) for (k,) in query(path, "SELECT contact_key FROM staging.stg_touched")}
    for table, kept in zip(tables, ("staging.stg_replaced_status", "staging.stg_replaced_history",
                                    "staging.stg_replaced_violations")):
        at = columns[table].index("business"), columns[table].index("contact_id")
        expected = sorted(r for r in before[table] if (r[at[0]], r[at[1]]) in touched)
        assert sorted(query(path, f"SELECT * FROM {kept}")) == expected, table
        assert expected or table == "consent_violations", table  # the night decides contacts again
    night = {t: sorted(query(path, f"SELECT * FROM {t}")) for t in tables}
    assert run_cli(staged, path, "--full") == 0
    assert {t: sorted(query(path, f"SELECT * FROM {t}")) for t in tables} == night


def _nights(exports: Path) -> list[list[str]]:
    """The channel folders in two nights: the first half, then the rest."""
    folders = sorted(p.name for p in exports.iterdir() if p.is_dir())
    return [folders[: len(folders) // 2], folders[len(folders) // 2 :]]


def test_full_rebuild_equals_incremental_runs(tmp_path, exports):
    incremental = tmp_path / "incremental.duckdb"
    staged = tmp_path / "staged"
    staged.mkdir()
    for night in _nights(exports):
        for folder in night:
            shutil.copytree(exports / folder, staged / folder)
        assert run_cli(staged, incremental, as_of="2026-11-05T00:00:00Z") == 0
    assert run_cli(staged, incremental) == 0  # later clock: the pending request expires
    before = _tables(incremental)
    assert run_cli(staged, incremental, "--full") == 0
    assert _tables(incremental) == before


def test_changed_file_is_read_again_and_removed_events_are_reported(exports, warehouse_path, after_first_run):
    path = exports / "web_form" / "signups_2026-11-01.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # drop the second data row
    assert run_cli(exports, warehouse_path) == 0
    rows = query(
        warehouse_path,
        "SELECT events_no_longer_in_file, notes FROM source_files WHERE source_file = ? ORDER BY first_seen_run",
        ["web_form/signups_2026-11-01.csv"],
    )
    changed = [r for r in rows if r[0]]
    assert changed and changed[0][0] == 1
    assert any("content changed" in n for n in changed[0][1])


def test_missing_consent_dates_fail_the_run_but_opt_outs_still_apply(exports, warehouse_path, capsys):
    (exports / "in_app").mkdir()
    (exports / "in_app" / "app_optins.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method,notice_version\n"
        "+4915201234568,opt_in,marketing,,in_app_prompt,app-v1\n"
        "+4915201234569,opt_in,marketing,,in_app_prompt,app-v1\n"
        "+4915201234570,opt_in,marketing,2026-11-02T10:00:00Z,in_app_prompt,app-v1\n"
    )
    code = run_cli(exports, warehouse_path)
    out = capsys.readouterr().out
    assert code == 1
    assert "run FAILED" in out
    # The summary names the channel, the file and how many rows failed.
    assert "in_app/app_optins.csv" in out and '"unexpected_count": 2' in out
    got = statuses(warehouse_path)
    assert got[("+4915201234568", "marketing")] == "no_consent"
    assert got[("+4915201234569", "marketing")] == "no_consent"
    assert got[("+4915201234570", "marketing")] == "opted_in"
    assert got[("+447400123456", "marketing")] == "opted_out"  # the same run's opt-outs are published
    assert query(warehouse_path, "SELECT status, checks_failed FROM runs")[0][0] == "failed"
    # Without a date of their own, the two opt-ins count on the day they were ingested (the mart reads
    # the ledger for them alone).
    ingested = query(warehouse_path, "SELECT DISTINCT ingested_at::DATE FROM consent_events WHERE occurred_at IS NULL "
                                     "AND event_type = 'opt_in'")
    assert query(warehouse_path, "SELECT day, opt_ins FROM violations_summary WHERE rule = 'missing_consent_date'") == [
        (ingested[0][0], 2)]


def test_missing_consent_method_fails_the_check(exports, warehouse_path, capsys):
    (exports / "in_app").mkdir()
    (exports / "in_app" / "app_optins.csv").write_text(
        "phone,event_type,purposes,occurred_at\n+4915201234568,opt_in,marketing,2026-11-02T10:00:00Z\n"
    )
    assert run_cli(exports, warehouse_path) == 1
    out = capsys.readouterr().out
    assert "Every opt-in records how the person consented" in out and "in_app/app_optins.csv" in out
    assert statuses(warehouse_path)[("+4915201234568", "marketing")] == "no_consent"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--exports", "/nonexistent/exports"], "exports folder not found"),
        (["run", "--as-of", "yesterday"], "--as-of"),
        (["run", "--bogus"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, message, capsys, tmp_path):
    from cli.main import main

    if "--exports" not in args and args[0] == "run":
        args = args + ["--exports", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_config_exits_2(exports, warehouse_path, capsys):
    (exports / "channels.yaml").write_text("channels:\n  web_form:\n    timezone: Mars/Olympus\n")
    assert run_cli(exports, warehouse_path) == 2
    assert "unknown time zone" in capsys.readouterr().err
    (exports / "channels.yaml").write_text("channels: [unclosed\n")
    assert run_cli(exports, warehouse_path) == 2


def test_cli_entry_point_runs_in_a_subprocess(exports, warehouse_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "run", "--exports", str(exports), "--warehouse", str(warehouse_path), "--as-of", AS_OF],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "total" in done.stdout
    assert "reading files: 5/5" in done.stderr and "building events: 22/22" in done.stderr  # progress with rate
    assert "+4915112345678" not in done.stdout + done.stderr  # no raw numbers in the summary or progress


def test_reconciling_the_ledger_in_small_ranges_of_contacts_changes_nothing(tmp_path, exports, monkeypatch):
    """The warehouse decides contacts range by range to bound memory; where it cuts must not matter.
    While the state machine decides them, DuckDB is left a share of its memory limit."""
    import consent.run.decide
    import consent.run.publish
    from consent.storage.db import memory_limit_bytes

    whole = tmp_path / "whole.duckdb"
    assert run_cli(exports, whole) == 0
    seen: list[list] = []
    real_ranges = consent.run.decide._contact_ranges
    monkeypatch.setattr(consent.run.decide, "_contact_ranges", lambda con, n: seen.append(real_ranges(con, n)) or seen[-1])
    monkeypatch.setattr(consent.run.decide, "RECONCILE_RANGE_EVENTS", 3)
    monkeypatch.setattr("consent.run.decide_sql.SQL_DECISIONS", False)  # every contact through the ranges
    monkeypatch.setattr(consent.run.decide, "CONTACT_COUNTS_FETCH", 2)  # the counts read a few at a time
    # DuckDB's memory limit while the state machine decides the ranges, and before and after it
    limits: dict[str, list[int]] = {"before": [], "deciding": [], "after": []}
    real_write, real_decide = consent.run.decide.write_frame, consent.run.publish.decide_contacts

    def writing(con, table, frame, **kwargs):
        limits["deciding"].append(memory_limit_bytes(con))
        return real_write(con, table, frame, **kwargs)

    def deciding(con, *args, **kwargs):
        limits["before"].append(memory_limit_bytes(con))
        decided = real_decide(con, *args, **kwargs)
        limits["after"].append(memory_limit_bytes(con))
        return decided

    monkeypatch.setattr(consent.run.decide, "write_frame", writing)
    monkeypatch.setattr(consent.run.publish, "decide_contacts", deciding)
    ranged = tmp_path / "ranged.duckdb"
    assert run_cli(exports, ranged) == 0
    # DuckDB was left a share of its limit while Python held the ranges, and had it back after
    [full] = set(limits["before"])
    share = max(full * consent.run.decide.STATE_MACHINE_ENGINE_SHARE, consent.run.decide.STATE_MACHINE_ENGINE_FLOOR)
    assert limits["deciding"] and all(abs(limit - share) < 2**20 / 10 for limit in limits["deciding"])  # to 0.1 MiB
    assert max(limits["deciding"]) < full and limits["after"] == limits["before"]
    assert len(seen[0]) > 3  # the fixture's contacts were really cut into several ranges
    bounds = [key for low, high, _ in seen[0] for key in (low, high)]
    assert bounds == sorted(bounds) and len(set(bounds[1::2])) == len(seen[0])  # in order, none twice
    [(contacts,)] = query(whole, "SELECT count(DISTINCT (business, contact_id)) FROM consent_status")
    assert sum(n for _, _, n in seen[0]) == contacts  # every contact in exactly one range
    assert _tables(ranged) == _tables(whole)
