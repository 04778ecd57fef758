"""Incremental nights equal a `--full` rebuild: nights with new inputs, a BSUID linked again to
another number, a clock that jumps days with nothing new; and `--full` itself rebuilds every status
from the ledger, whatever the tables held before."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import query, run_cli
from tests.test_identities import CSV_HEADER, PHONE, USER, delivered, payload, stamp, write

B = "+4915199887766"
C, D = "+4915100000003", "+4915100000004"
# Columns that name the run or the moment a row was read, not what the rows say.
RUN_COLUMNS = {"run_id", "ingested_at", "first_seen_run", "last_seen_run", "published_run"}
# Bookkeeping of the runs themselves (the runs, the marts' build modes, file fingerprints).
NOT_COMPARED = {"runs", "mart_builds", "file_fingerprints", "schema_version", "source_files", "settings", "send_checks",
                "send_check_rows"}


def everything(path: Path, skip: frozenset[str] = frozenset()) -> dict[str, list]:
    """Every table and mart of the warehouse (schema `main`: not the run's staging tables), without run columns."""
    tables = [t for (t,) in query(path, "SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
                                        "AND schema_name = 'main' ORDER BY 1")
              if t not in NOT_COMPARED]
    out = {}
    for table in tables:
        columns = [c for (c,) in query(path, "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
                                             "AND table_name = ? ORDER BY column_index", [table])
                   if c not in RUN_COLUMNS | skip]
        if "published_at" in skip:
            # `backfilled` says when an opt-out reached the warehouse (its channel's first run), as
            # `published_at` does: a warehouse built in one run holds every opt-out backfilled.
            columns = [("list_filter(findings, f -> f <> 'backfilled') AS findings" if c == "findings" else c)
                       for c in columns]
        out[table] = query(path, f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL")
    return out


def night_one(exports: Path) -> None:
    # A (PHONE) consents and is linked to USER; B and C consent; a DOI request for D stays pending.
    write(exports, "web_form/night1.csv", CSV_HEADER + "\n".join([
        f"{PHONE},,opt_in,marketing;utility,2026-11-01T10:00:00Z,checkbox,v1,{USER}",
        f"{B},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
        f"{C},,opt_in,marketing,2026-11-01T10:00:00Z,checkbox,v1,",
    ]) + "\n")
    write(exports, "email_link/night1.csv", CSV_HEADER + f"{D},,opt_in_request,marketing,2026-11-02T10:00:00Z,confirmation_link,v1,\n")
    # A says STOP by number; a marketing message to USER alone is delivered after it (sent to A).
    stop = payload({"contacts": [{"wa_id": PHONE[1:]}], "messages": [
        {"from": PHONE[1:], "id": "wamid.stopA", "timestamp": stamp(3), "type": "text", "text": {"body": "STOP"}}]})
    write(exports, "whatsapp/night1.jsonl", [stop, delivered(4, with_phone=False)])


def night_two(exports: Path) -> None:
    # USER is linked again, now to B (a later row): the message sent to USER is B's from now on.
    write(exports, "web_form/night2.csv", CSV_HEADER + f"{B},,opt_in,utility,2026-11-05T10:00:00Z,checkbox,v1,{USER}\n")


def test_nights_with_a_relinked_bsuid_and_a_jumping_clock_equal_a_full_rebuild(tmp_path):
    from consent import marts

    exports, path = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    night_one(exports)
    assert run_cli(exports, path, as_of="2026-11-05T00:00:00Z") == 0
    sends = "SELECT contact_hash, messages_after_opt_out FROM opt_out_timeliness WHERE messages_after_opt_out > 0"
    assert len(query(path, sends)) == 1  # A: a message after its STOP
    night_two(exports)
    assert run_cli(exports, path, as_of="2026-11-06T00:00:00Z") == 0
    assert query(path, sends) == []  # the message is B's now: A no longer has one after its STOP
    # Nothing new for six days: the request expires, consent_daily gains the days in between.
    assert run_cli(exports, path, as_of="2026-11-12T00:00:00Z") == 0
    modes = dict(query(path, "SELECT mart, mode FROM mart_builds"))
    assert {modes[m] for m in marts.INCREMENTAL} == {"incremental"}
    by_night = everything(path)
    days = {d for (d,) in query(path, "SELECT DISTINCT day::VARCHAR FROM consent_daily")}
    assert {f"2026-11-{d:02d}" for d in range(1, 12)} <= days

    rebuilt = tmp_path / "rebuilt" / "consent.duckdb"
    shutil.copytree(path.parent, rebuilt.parent)
    assert run_cli(exports, rebuilt, "--full", as_of="2026-11-12T00:00:00Z") == 0
    full = everything(rebuilt)
    assert full.keys() == by_night.keys()
    for table in full:
        assert full[table] == by_night[table], table


def test_full_rebuilds_every_status_from_the_ledger_with_new_inputs_and_a_later_clock(tmp_path, monkeypatch):
    """A `--full` night with new files and a later clock equals one run over the same exports on a new
    warehouse, even where the tables held a wrong row (a status left by an older version)."""
    monkeypatch.setenv("CONSENT_HASH_SALT", "one salt for both warehouses")
    exports, path = tmp_path / "exports", tmp_path / "wh" / "consent.duckdb"
    night_one(exports)
    assert run_cli(exports, path, as_of="2026-11-05T00:00:00Z") == 0
    night_two(exports)
    assert run_cli(exports, path, as_of="2026-11-06T00:00:00Z") == 0
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("UPDATE consent_status SET status = 'opted_in' WHERE contact_id = ? AND purpose = 'marketing'", [PHONE])
    con.close()
    write(exports, "web_form/night3.csv", CSV_HEADER + f"{C},,opt_out,,2026-11-08T10:00:00Z,,,\n")
    assert run_cli(exports, path, "--full", as_of="2026-11-12T00:00:00Z") == 0
    assert query(path, "SELECT status FROM consent_status WHERE contact_id = ? AND purpose = 'marketing'", [PHONE]) == [
        ("opted_out",)]

    fresh = tmp_path / "fresh" / "consent.duckdb"
    assert run_cli(exports, fresh, as_of="2026-11-12T00:00:00Z") == 0
    # (when an opt-out reached the warehouse is the clock of the run that read it: a night earlier here)
    when_published = frozenset({"published_at", "business_days_to_publish"})
    got, want = everything(path, when_published), everything(fresh, when_published)
    assert got.keys() == want.keys()
    for table in want:
        assert got[table] == want[table], table
