"""Mutation check: does each guarantee's test fail when the code that keeps the guarantee breaks?

Each entry of MUTATIONS is one small change to the code (file, exact old text, new text), the
guarantee it breaks and the tests that claim that guarantee. For each, this script applies the
change to a temporary copy of the repository, runs those tests there (the copy's code, not the
installed one: checked before anything runs) and prints one line: "caught by TEST" or "SURVIVED".
First it runs every chosen test once on the unchanged copy: a test that already fails would "catch"
every change. It ends with "N caught, M survived" and exits non-zero if any change survived or no
longer applies (its old text is not found exactly once in the current code: keep the list current
when code moves).

    .venv/bin/python bench/mutations.py            # every mutation (several minutes; run it with nice)
    .venv/bin/python bench/mutations.py --list     # the mutations, their guarantee and file
    .venv/bin/python bench/mutations.py --only erasure_bsuid_match_dropped [--only ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUARANTEES = ("conservation", "opt-outs never blocked", "erasure", "order independence", "number change",
              "business scope", "the gate", "migrations", "incremental equals full", "no number in outputs",
              "SQL decides as the state machine", "within the memory limit")
# Per mutation: at most this long (a hung run is an error, not a catch).
TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Mutation:
    name: str
    guarantee: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


G = "tests/test_guarantees.py::"
N = "tests/test_nights_equal_full.py::"
R = "tests/test_reconcile.py::"
I = "tests/test_identities.py::"  # noqa: E741

MUTATIONS: tuple[Mutation, ...] = (
    # --- conservation -------------------------------------------------------------------------
    Mutation("rows_conserved_check_never_fires", "conservation", "assets/checks.py",
             "WHERE state = 'new' AND rows_read <> events + quarantined + skipped",
             "WHERE state = 'new' AND rows_read <> rows_read",
             (G + "test_a_reader_that_drops_an_item_fails_the_conservation_check",)),
    Mutation("webhook_reader_drops_read_statuses", "conservation", "consent/reading/channels/whatsapp_webhook.py",
             "            fields, send, skip, occurred_at = self.reader.status_fields(item, contacts)\n"
             "            if skip is None",
             "            fields, send, skip, occurred_at = self.reader.status_fields(item, contacts)\n"
             "            if send[\"status\"] == \"read\":\n                return True\n            if skip is None",
             (G + "test_rows_read_of_a_webhook_file_is_the_number_of_items_in_its_payloads",)),
    Mutation("rows_read_is_the_readers_own_count", "conservation", "consent/reading/channels/base.py",
             "        if self.items is not None:\n            return self.items\n",
             "",
             (G + "test_a_reader_that_drops_an_item_fails_the_conservation_check",)),
    Mutation("bsuid_update_item_not_a_dict_dropped", "conservation", "consent/reading/channels/whatsapp_webhook.py",
             "            rows.append(SourceRow(line=line, raw=raw_json(item)[:4096], identity=\"\", "
             "pointer=f\"{base}.user_id_update[{i}]\",\n",
             "            continue\n            rows.append(SourceRow(line=line, raw=raw_json(item)[:4096], identity=\"\", "
             "pointer=f\"{base}.user_id_update[{i}]\",\n",
             (G + "test_rows_read_of_a_webhook_file_is_the_number_of_items_in_its_payloads",)),
    # --- opt-outs never blocked ---------------------------------------------------------------
    Mutation("opt_in_wins_a_tie_with_an_opt_out", "opt-outs never blocked", "consent/domain/reconcile.py",
             '"resume": 1, "inbound_message": 1, "opt_out": 2,', '"resume": 1, "inbound_message": 1, "opt_out": 0,',
             (R + "test_section5_at_equal_instants_the_opt_out_wins",)),
    Mutation("opt_out_without_purposes_covers_none", "opt-outs never blocked", "consent/domain/reconcile.py",
             "        if not event.purposes:  # opt-outs and resumes without purposes mean all purposes\n"
             "            return list(result.states)",
             "        if not event.purposes:  # opt-outs and resumes without purposes mean all purposes\n"
             "            return []",
             (R + "test_section4_opt_out_without_purposes_covers_all_purposes",)),
    Mutation("error_131050_not_an_opt_out", "opt-outs never blocked", "consent/reading/channels/whatsapp_webhook.py",
             "MARKETING_OPT_OUT_ERROR = 131050", "MARKETING_OPT_OUT_ERROR = 131051",
             (I + "test_user_preferences_stop_and_131050_failure_addressed_by_bsuid",)),
    Mutation("stop_keyword_forgotten", "opt-outs never blocked", "consent/domain/policy.py",
             '    "STOP", "STOP ALL", "STOPALL",', '    "STOP ALL", "STOPALL",',
             ("tests/test_channels.py::test_keywords_are_whole_message_case_and_punctuation_insensitive",)),
    Mutation("opt_out_with_unreadable_field_refused", "opt-outs never blocked", "consent/domain/events.py",
             '        if event_type != "opt_out":\n            raise', '        if True:\n            raise',
             ("tests/test_reliability.py::test_opt_out_with_unreadable_date_applies_at_ingestion_time_with_a_warning",)),
    Mutation("whatsapp_settings_stop_not_an_opt_out", "opt-outs never blocked", "consent/reading/channels/whatsapp_webhook.py",
             '"event_type": {"stop": "opt_out", "resume": "resume"}.get(value, ""),',
             '"event_type": {"stop": "inbound_message", "resume": "resume"}.get(value, ""),',
             (I + "test_user_preferences_stop_and_131050_failure_addressed_by_bsuid",)),
    Mutation("undecided_bucket_left_for_ever", "opt-outs never blocked", "consent/run/publish.py",
             "    full = full or table_exists(con, UNDECIDED)\n", "",
             ("tests/test_partitions.py::test_a_bucket_that_keeps_conflicting_fails_the_run_and_the_next_run_decides_every_contact",)),
    Mutation("fan_out_skips_the_last_bucket", "opt-outs never blocked", "assets/buckets.py",
             '        for bucket in range(buckets):\n',
             '        for bucket in range(buckets - 1):\n',
             ("tests/test_partitions.py::test_a_nights_buckets_are_decided_by_dagster_each_in_a_process_of_its_own_on_ducklake",)),
    Mutation("staged_buckets_lose_bucket_0", "opt-outs never blocked", "consent/run/buckets.py",
             'con.execute(f"CREATE OR REPLACE TABLE {STAGED_BUCKETS} AS FROM touched_buckets")',
             'con.execute(f"CREATE OR REPLACE TABLE {STAGED_BUCKETS} AS FROM touched_buckets WHERE bucket > 0")',
             ("tests/test_partitions.py::test_a_nights_buckets_are_decided_by_dagster_each_in_a_process_of_its_own_on_ducklake",)),
    Mutation("fan_out_in_the_nights_process", "opt-outs never blocked", "assets/buckets.py",
             "@dg.job(name=BUCKET_JOB, executor_def=dg.multiprocess_executor,",
             "@dg.job(name=BUCKET_JOB, executor_def=dg.in_process_executor,",
             ("tests/test_partitions.py::test_a_nights_buckets_are_decided_by_dagster_each_in_a_process_of_its_own_on_ducklake",)),
    # --- erasure ------------------------------------------------------------------------------
    Mutation("erasure_bsuid_match_dropped", "erasure", "consent/storage/sql/suppressed_events.sql",
             "    UNION ALL\n"
             "    SELECT h.*, p.erased_at FROM hashed AS h JOIN suppression_list AS p ON p.phone_hash = h.user_hash_\n",
             "",
             (I + "test_erase_and_access_by_bsuid_cover_the_linked_number",)),
    Mutation("erasure_keeps_pre_erasure_events_after_a_new_consent", "erasure", "consent/storage/sql/suppressed_events.sql",
             ") OR s.occurred_at IS NULL OR s.occurred_at <= s.erased_at", ") OR s.occurred_at IS NULL",
             (G + "test_events_from_before_an_erasure_stay_out_when_the_person_consents_again",)),
    Mutation("erased_links_learnt_again", "erasure", "consent/storage/sql/suppressed_events.sql",
             "DELETE FROM staging.stg_identifier_links WHERE list_has_any(",
             "DELETE FROM staging.stg_identifier_links WHERE false AND list_has_any(",
             (I + "test_erase_and_access_by_bsuid_cover_the_linked_number",)),
    Mutation("gate_forgets_erased_numbers", "erasure", "consent/storage/sql/audience_decisions.sql",
             "(s1.phone_hash IS NOT NULL OR s2.phone_hash IS NOT NULL) AS erased", "false AS erased",
             ("tests/test_gate.py::test_every_row_gets_a_decision_and_its_reason_and_the_check_is_logged",)),
    # --- order independence -------------------------------------------------------------------
    Mutation("events_applied_in_arrival_order_at_equal_times", "order independence", "consent/domain/reconcile.py",
             "return (self.effective_at, _APPLY_RANK.get(self.event_type, 1), self.event_id)",
             "return (self.effective_at,)",
             (R + "test_section5_at_equal_instants_the_opt_out_wins",
              R + "test_property_shuffling_events_never_changes_status")),
    Mutation("events_applied_in_arrival_order", "order independence", "consent/domain/reconcile.py",
             "        for event in sorted(events, key=Event.sort_key):\n",
             "        for event in events:\n",
             (R + "test_property_shuffling_events_never_changes_status",)),
    # --- number change ------------------------------------------------------------------------
    Mutation("number_change_keeps_the_old_numbers_consent_for_a_start", "number change", "consent/domain/reconcile.py",
             "            state.last_valid_consent = None\n            state.pending_request = None\n",
             "            state.pending_request = None\n",
             (G + "test_a_start_from_the_old_number_after_a_change_restores_nothing",)),
    Mutation("number_change_leaves_the_old_number_opted_in", "number change", "consent/domain/reconcile.py",
             '            if state.status in ("opted_in", "pending", "expired"):\n                state.move("no_consent"',
             '            if state.status in ("pending", "expired"):\n                state.move("no_consent"',
             (G + "test_a_start_from_the_old_number_after_a_change_restores_nothing",
              I + "test_a_number_change_ends_the_old_numbers_consent_and_carries_opt_outs")),
    Mutation("new_number_does_not_inherit_opt_outs", "number change", "consent/storage/sql/contact_events.sql",
             "     AND coalesce(l.occurred_at, l.ingested_at) < c.changed_at\n",
             "     AND coalesce(l.occurred_at, l.ingested_at) < c.changed_at AND l.event_type <> 'opt_out'\n",
             (I + "test_a_number_change_ends_the_old_numbers_consent_and_carries_opt_outs",)),
    # --- business scope -----------------------------------------------------------------------
    Mutation("unclaimed_number_quarantined_under_the_folder", "business scope", "consent/domain/events.py",
             "    except RowError:\n        return None\n\n\ndef user_id(",
             "    except RowError:\n        return ctx.business\n\n\ndef user_id(",
             ("tests/test_quarantine_business.py::test_each_quarantined_row_counts_under_the_business_its_event_would_have_had",)),
    Mutation("migration_gives_unclaimed_rows_the_files_business", "business scope",
             "consent/storage/sql/migrations/v13.sql",
             "\n  AND NOT starts_with(q.reason, 'phone_number_id of the webhook is not claimed by any business');", ";",
             ("tests/test_migrations.py::test_quarantined_rows_and_skipped_items_read_before_get_the_business_of_their_file",)),
    Mutation("dashboard_counts_every_businesss_quarantine", "business scope", "consent/reports/dashboard.py",
             'quarantined = sum(n for _, _, n in _of(data.rows["reasons"], business))',
             'quarantined = sum(n for _, _, n in _of(data.rows["reasons"], ALL))',
             ("tests/test_quarantine_business.py::test_the_dashboard_shows_each_business_its_own_quarantined_rows",)),
    Mutation("bsuid_crosses_businesses", "business scope", "consent/storage/sql/contact_events.sql",
             "LEFT JOIN bsuid_phone AS b ON e.phone_e164 IS NULL AND b.business = e.business AND b.user_id = e.whatsapp_user_id",
             "LEFT JOIN bsuid_phone AS b ON e.phone_e164 IS NULL AND b.user_id = e.whatsapp_user_id",
             (I + "test_a_bsuid_is_scoped_to_its_business_unless_a_parent_bsuid_ties_them",)),
    Mutation("opt_out_reaches_every_business_by_default", "business scope", "consent/storage/sql/contact_events.sql",
             "    WHERE getvariable('opt_out_all_businesses') AND l.event_type = 'opt_out'",
             "    WHERE l.event_type = 'opt_out'",
             (I + "test_two_businesses_keep_separate_consent_and_a_stop_to_one_ends_only_its_own",)),
    # --- the gate -----------------------------------------------------------------------------
    Mutation("gate_ignores_an_unlinked_bsuids_stop", "the gate", "consent/storage/sql/audience_decisions.sql",
             "LEFT JOIN at_time AS u ON u.contact_id = r.user_contact_id",
             "LEFT JOIN at_time AS u ON false",
             (G + "test_a_row_with_an_opted_in_number_and_an_unlinked_bsuid_that_sent_stop_is_blocked",)),
    Mutation("gate_reads_todays_status_for_a_past_send", "the gate", "consent/storage/sql/audience_decisions.sql",
             "      AND h.valid_from <= $at AND coalesce(h.valid_to, TIMESTAMP '9999-12-31') > $at",
             "      AND h.valid_to IS NULL",
             ("tests/test_gate.py::test_a_past_send_is_rechecked_as_of_its_time_and_renewal_due_still_sends",)),
    # --- migrations ---------------------------------------------------------------------------
    Mutation("migration_loses_phone_cache_rows", "migrations", "consent/storage/sql/migrations/v07.sql",
             "INSERT INTO phone_cache__v7 BY NAME SELECT * FROM phone_cache;",
             "INSERT INTO phone_cache__v7 BY NAME SELECT * FROM phone_cache WHERE country_hint IS NULL;",
             ("tests/test_migrations.py::test_an_old_warehouse_is_migrated_in_place_by_the_next_run_and_loses_nothing",)),
    Mutation("migration_loses_skipped_items", "migrations", "consent/storage/sql/migrations/v09.sql",
             "ALTER TABLE skipped_items__v9 RENAME TO skipped_items;",
             "ALTER TABLE skipped_items__v9 RENAME TO skipped_items;\n"
             "DELETE FROM skipped_items WHERE raw_row IS NOT NULL;",
             ("tests/test_migrations.py::test_an_old_warehouse_is_migrated_in_place_by_the_next_run_and_loses_nothing",)),
    # --- incremental equals full --------------------------------------------------------------
    # A dashboard over the rows it drew before keeps its charts; one over changed marts draws them again.
    Mutation("dashboard_keeps_charts_of_changed_marts", "incremental equals full", "consent/reports/dashboard.py",
             "digest = hashlib.sha256(repr((data.businesses, data.purposes, sorted(data.rows.items()))).encode())",
             'digest = hashlib.sha256(b"")',
             ("tests/test_marts.py::test_a_dashboard_over_the_same_marts_keeps_its_charts_and_one_over_changed_marts_draws_them_again",)),
    # A run's steps share one DuckDB instance; the compaction in its publish step closes it before
    # replacing the file, else the later steps write into the file replaced.
    Mutation("compaction_keeps_the_runs_instance_on_the_old_file", "erasure", "consent/storage/access.py",
             "        self.close_held_writer()  # no instance of this process may hold the file it replaces\n",
             "",
             ("tests/test_erasure_stays.py::test_erased_number_is_gone_and_a_reimport_in_every_spelling_brings_back_no_copy",)),
    # A night re-decides (and so rebuilds the marts of) every number a BSUID of its new links pointed
    # to before (touched_contacts.sql); mart_scope.sql's own clause for them is a second line of defence.
    Mutation("night_forgets_numbers_a_relinked_bsuid_pointed_to", "incremental equals full",
             "consent/storage/sql/touched_contacts.sql",
             "UNION SELECT business || chr(31) || phone_e164 FROM scoped_links\n      WHERE phone_e164 IS NOT NULL AND",
             "UNION SELECT business || chr(31) || phone_e164 FROM scoped_links\n      WHERE false AND phone_e164 IS NOT NULL AND",
             (N + "test_nights_with_a_relinked_bsuid_and_a_jumping_clock_equal_a_full_rebuild",
              "tests/test_rules_edge_cases.py::test_2_a_newer_link_learnt_on_a_later_night_takes_the_bsuid_only_opt_in_from_the_earlier_number")),
    Mutation("mart_scope_forgets_the_previous_clock_day", "incremental equals full", "consent/storage/sql/mart_scope.sql",
             "    (SELECT max(as_of) FROM runs WHERE run_id <> $run_id)::DATE,\n", "",
             (N + "test_nights_with_a_relinked_bsuid_and_a_jumping_clock_equal_a_full_rebuild",)),
    Mutation("publish_ignores_full", "incremental equals full", "assets/warehouse.py",
             "full=settings.full, progress=ProgressReporter(context.log),",
             "full=False, progress=ProgressReporter(context.log),",
             (N + "test_full_rebuilds_every_status_from_the_ledger_with_new_inputs_and_a_later_clock",)),
    Mutation("pending_request_never_expires_on_a_night", "incremental equals full", "consent/storage/sql/time_alone.sql",
             "WHERE (status = 'pending' AND (status_since IS NULL OR status_since <= $requested_by))",
             "WHERE (status = 'pending' AND false)",
             (N + "test_nights_with_a_relinked_bsuid_and_a_jumping_clock_equal_a_full_rebuild",)),
    Mutation("night_scope_ignores_number_changes", "incremental equals full", "consent/storage/sql/event_scope_grow.sql",
             "   OR parent_user_id IN (SELECT id FROM scope_ids) OR changed_to IN (SELECT id FROM scope_ids);",
             "   OR parent_user_id IN (SELECT id FROM scope_ids);",
             (I + "test_a_night_reads_every_event_its_contacts_inherit_through_number_changes_and_links",)),
    # --- SQL decides as the state machine -----------------------------------------------------
    # A resume restores consent only once after an opt-out: a second START finds the contact opted in.
    Mutation("sql_every_resume_after_an_opt_out_restores", "SQL decides as the state machine",
             "consent/storage/sql/sql_decisions.sql",
             "OR (previous_kind = 'opt_out' AND last_grant", "OR (previous_kind IN ('opt_out', 'resume') AND last_grant",
             ("tests/test_decide_sql.py::test_histories_decided_in_sql_equal_the_state_machine",)),
    # A notice stops being valid at its end: an opt-in at that very moment is not covered by it.
    Mutation("sql_notice_valid_through_its_end", "SQL decides as the state machine",
             "consent/storage/sql/sql_decidable.sql",
             "(n_valid_until IS NULL OR occurred_at < n_valid_until)", "(n_valid_until IS NULL OR occurred_at <= n_valid_until)",
             ("tests/test_decide_sql.py::test_histories_decided_in_sql_equal_the_state_machine",)),
    # An opt-in inherited through a number change or a link is left to the state machine.
    Mutation("sql_decides_inherited_opt_ins", "SQL decides as the state machine",
             "consent/storage/sql/sql_decidable.sql",
             "AND NOT coalesce(list_contains(doi_channels, channel), false) AND NOT inherited)",
             "AND NOT coalesce(list_contains(doi_channels, channel), false))",
             ("tests/test_decide_sql.py::test_histories_decided_in_sql_equal_the_state_machine",)),
    # A clean-up in a transaction an error aborted must leave the error as it is (at 5M: out of memory).
    Mutation("aborted_cleanup_hides_the_error", "SQL decides as the state machine", "consent/storage/db.py",
             '            if "transaction is aborted" not in str(exc).lower():\n',
             '            if True:\n',
             ("tests/test_decide_sql.py::test_an_error_inside_the_sql_path_reaches_the_run_record_as_itself",)),
    # --- within the memory limit --------------------------------------------------------------
    # A mart's temporary tables are made before the transaction that writes it: made inside it, they
    # cannot spill, and at 10M events opt_out_timeliness ran out of the 1GB default.
    Mutation("mart_temporary_tables_inside_the_write", "within the memory limit", "consent/marts/__init__.py",
             "        for _, statement in before:\n            con.execute(statement)\n        with transaction(con):\n",
             "        with transaction(con):\n            for _, statement in before:\n                con.execute(statement)\n",
             ("tests/test_marts.py::test_a_mart_whose_temporary_tables_outgrow_a_small_memory_limit_is_still_built",)),
    # While the state machine holds its ranges in Python, DuckDB is left a share of its limit, and has
    # its whole limit back after them (even after an error aborted the run's transaction).
    Mutation("state_machine_leaves_duckdb_its_whole_limit", "within the memory limit", "consent/run/decide.py",
             "share = STATE_MACHINE_ENGINE_SHARE if len(ranges) > 1 else 1.0", "share = 1.0",
             ("tests/test_pipeline.py::test_reconciling_the_ledger_in_small_ranges_of_contacts_changes_nothing",)),
    Mutation("duckdb_limit_not_set_back_after_an_aborted_transaction", "within the memory limit", "consent/storage/db.py",
             "            with con.cursor() as setter:\n                setter.execute(f\"SET memory_limit = '{int((number + 0.05) * unit)}B'\")",
             "            con.execute(f\"SET memory_limit = '{int((number + 0.05) * unit)}B'\")",
             ("tests/test_scale.py::test_duckdb_left_a_share_of_its_limit_spills_what_it_holds_and_has_its_limit_back",)),
    # --- no number in outputs -----------------------------------------------------------------
    Mutation("send_audit_shows_the_number", "no number in outputs", "consent/marts/send_audit.sql",
             "        salted_hash(recipient) AS recipient_hash,", "        recipient AS recipient_hash,",
             ("tests/test_marts.py::test_marts_hold_no_raw_numbers",)),
    Mutation("opt_out_timeliness_shows_the_number", "no number in outputs", "consent/marts/opt_out_timeliness.sql",
             "        salted_hash(p.contact_id) AS contact_hash,", "        p.contact_id AS contact_hash,",
             ("tests/test_marts.py::test_marts_hold_no_raw_numbers",)),
)


def problems(root: Path = REPO, mutations: tuple[Mutation, ...] = MUTATIONS) -> list[str]:
    """Why mutations do not apply to the code under `root` (empty: every old text found exactly once)."""
    found = []
    names = [m.name for m in mutations]
    found += [f"{n}: name used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in mutations:
        path = root / m.file
        count = path.read_text().count(m.old) if path.is_file() else -1
        if count != 1:
            found.append(f"{m.name}: old text found {count} times in {m.file}" if count >= 0 else f"{m.name}: no file {m.file}")
        if m.guarantee not in GUARANTEES:
            found.append(f"{m.name}: unknown guarantee {m.guarantee!r}")
        for test in m.tests:
            if not (root / test.split("::")[0]).is_file():
                found.append(f"{m.name}: no test file for {test}")
    return found


def copy_repository(target: Path) -> None:
    """The repository's files (tracked and new, not ignored ones such as .venv) copied to `target`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def environment(copy: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CONSENT_CRASH_AT", None)
    return env


def check_imports_from(copy: Path) -> None:
    """Stop unless the copy's packages, not the installed ones, are what Python imports there."""
    probe = ("import assets, consent, expectations, pipelines, tests.conftest; "
             "print('\\n'.join(m.__file__ for m in (assets, consent, expectations, pipelines, tests.conftest)))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=copy, env=environment(copy), check=True,
                         capture_output=True, text=True).stdout.split()
    outside = [f for f in out if not Path(f).resolve().is_relative_to(copy.resolve())]
    if outside:
        sys.exit(f"the copy's tests would import code outside it: {outside}")


def run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[str, str]:
    """('passed' | 'failed' | 'error', the first failing test or the error)."""
    command = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-x", "-q", "-o",
               "addopts=--import-mode=importlib", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return "error", f"timed out after {TIMEOUT_SECONDS} s"
    if done.returncode == 0:
        return "passed", ""
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, flags=re.M)
    if done.returncode == 1 and failed:
        return "failed", failed[0]
    return "error", f"pytest exit {done.returncode}: " + (done.stdout + done.stderr).strip()[-400:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run this mutation only (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the chosen tests once on the unchanged copy first")
    args = parser.parse_args(argv)
    chosen = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
        if unknown:
            parser.error(f"unknown mutation: {', '.join(unknown)} (see --list)")
        chosen = tuple(m for m in MUTATIONS if m.name in args.only)
    if args.list:
        for m in chosen:
            print(f"{m.name:58} {m.guarantee:24} {m.file}")
        return 0
    broken = problems(REPO, chosen)
    for line in broken:
        print(f"ERROR {line}")
    caught, survived, errors = 0, 0, len(broken)
    with tempfile.TemporaryDirectory(prefix="mutations-") as tmp:
        copy = Path(tmp) / "repo"
        copy_repository(copy)
        check_imports_from(copy)
        if not args.no_baseline:
            # A test that fails without any change would "catch" every change: it must pass first.
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            outcome, detail = run_tests(copy, tests)
            if outcome != "passed":
                print(f"ERROR baseline: the unchanged code fails {detail}")
                return 1
            print(f"baseline: {len(tests)} tests pass on the unchanged code", flush=True)
        for m in chosen:
            if any(line.startswith(f"{m.name}:") for line in broken):
                continue
            path = copy / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            started = time.monotonic()
            try:
                outcome, detail = run_tests(copy, m.tests)
            finally:
                path.write_text(original)
            seconds = f"{time.monotonic() - started:.0f} s"
            if outcome == "failed":
                caught += 1
                print(f"{m.name} ({m.guarantee}): caught by {detail} [{seconds}]", flush=True)
            elif outcome == "passed":
                survived += 1
                print(f"{m.name} ({m.guarantee}): SURVIVED {' '.join(m.tests)} [{seconds}]", flush=True)
            else:
                errors += 1
                print(f"{m.name} ({m.guarantee}): ERROR {detail} [{seconds}]", flush=True)
    print(f"{caught} caught, {survived} survived" + (f", {errors} errors" if errors else ""))
    return 1 if survived or errors else 0


if __name__ == "__main__":
    sys.exit(main())
