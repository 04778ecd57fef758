"""Property-based tests over generated exports, on the Dagster-free pipeline.

Conservation (rows read = events + quarantined + skipped), idempotence (a
second run changes nothing), order independence (files arriving one by one in
any order give the warehouse that all at once gives), and that no contact is
ever `opted_in` without evidence.
"""

import csv
import io
import json
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent import marts
from consent.domain.policy import Policy, load_channels
from consent.storage.migrations import ensure_schema
from consent.run.publish import publish
from consent.run.staging import stage_run
from consent.storage.sql import use_salt

AS_OF = datetime(2026, 11, 20)
SPELLINGS = {
    "+4915112345678": ["+4915112345678", "+49 151 1234 5678", "0151 12345678|DE", "004915112345678"],
    "+447400123456": ["+447400123456", "07400 123456|GB", "+44 7400 123456"],
    "+12015550123": ["+12015550123", "(201) 555-0123|US"],
}
BAD_PHONES = ["4.47911E+11", "12345|DE", "", "call me"]
# Each person's business-scoped user ID (rules, section 9): exports and webhooks may name them by it alone.
BSUIDS = {"+4915112345678": "DE.1001", "+447400123456": "GB.2002", "+12015550123": "US.3003"}
COLUMNS = ["phone", "country", "event_type", "purposes", "occurred_at", "consent_method", "notice_version",
           "checkbox_pre_ticked", "acquisition_source", "whatsapp_user_id"]
# Two businesses (rules, section 10): webhooks reach one or the other by their phone_number_id.
BUSINESSES_YAML = """businesses:
  acme_shoes:
    channels: [web_form, in_app, whatsapp]
    whatsapp_phone_number_ids: ["111"]
  acme_bank:
    channels: [email_link, preference_center]
    whatsapp_phone_number_ids: ["222"]
"""


@st.composite
def csv_rows(draw):
    contact = draw(st.sampled_from(sorted(SPELLINGS)))
    spelling = draw(st.sampled_from(SPELLINGS[contact] + BAD_PHONES[: draw(st.integers(0, 1))]))
    phone, _, country = spelling.partition("|")
    event_type = draw(st.sampled_from(["opt_in", "opt_in", "opt_out", "opt_in_request", "opt_in_confirm", "resume",
                                       "inbound_message", "subscribe"]))
    hours = draw(st.integers(0, 24 * 15))
    when = draw(st.sampled_from([(datetime(2026, 11, 1) + timedelta(hours=hours)).isoformat() + "Z", "", "yesterday"]))
    return [
        phone, country, event_type, draw(st.sampled_from(["marketing", "utility", "marketing;utility", ""])), when,
        draw(st.sampled_from(["checkbox", "", "imported"])), draw(st.sampled_from(["v1", ""])),
        draw(st.sampled_from(["false", "true", "", "maybe"])), draw(st.sampled_from(["organic", "", "purchased"])),
        draw(st.sampled_from(["", "", BSUIDS[contact], "XX.not valid"])),
    ]


@st.composite
def webhook_lines(draw):
    """A message (by number, by BSUID alone as a username user sends it, or both) or a delivered
    status that links the two, to one of two businesses' numbers."""
    number = draw(st.sampled_from(sorted(SPELLINGS)))
    contact, user = number[1:], BSUIDS[number]
    body = draw(st.sampled_from(["STOP", "hello", "START", "stop!"]))
    stamp = int(datetime(2026, 11, 1).timestamp()) + draw(st.integers(0, 15 * 86400))
    # WhatsApp's message id names one message: a redelivery repeats it with the same content.
    mid = f"wamid.{draw(st.integers(0, 30))}.{stamp}.{body}.{contact}"
    by = draw(st.sampled_from(["number", "bsuid", "both"]))
    wa = {"wa_id": contact} if by != "bsuid" else {}
    uid = {"user_id": user} if by != "number" else {}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550001111", "phone_number_id": draw(st.sampled_from(["111", "222"]))},
             "contacts": [{"profile": {"name": "Kim", "username": "@kim"}, **wa, **uid}]}
    if draw(st.integers(0, 3)):
        value["messages"] = [{**({"from": contact} if wa else {}), **({"from_user_id": user} if uid else {}),
                              "id": mid, "timestamp": str(stamp), "type": "text", "text": {"body": body}}]
    else:
        value["statuses"] = [{"id": mid, "status": "delivered", "timestamp": str(stamp), "recipient_id": contact,
                              "recipient_user_id": user, "pricing": {"category": "marketing"}}]
    payload = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}
    return json.dumps(payload) if draw(st.integers(0, 9)) else json.dumps(payload)[:40]


@st.composite
def export_sets(draw):
    files = {}
    for n in range(draw(st.integers(1, 4))):
        channel = draw(st.sampled_from(["web_form", "in_app", "email_link", "preference_center"]))
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(draw(st.lists(csv_rows(), min_size=0, max_size=8)))
        files[f"{channel}/export_{n}.csv"] = out.getvalue()
    for n in range(draw(st.integers(0, 2))):
        files[f"whatsapp/hooks_{n}.jsonl"] = "\n".join(draw(st.lists(webhook_lines(), min_size=1, max_size=6))) + "\n"
    if draw(st.booleans()):
        files["businesses.yaml"] = BUSINESSES_YAML
    return files


def write_exports(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_plain(exports: Path, con: duckdb.DuckDBPyConnection, run_id: str, full: bool = False,
              as_of: datetime = AS_OF, policy: Policy | None = None):
    @contextmanager
    def connect():
        yield con

    policy = policy or Policy()
    use_salt(con, "test-salt")  # what the warehouse's door does at connect
    staged = stage_run(connect, exports, policy=policy, channels=load_channels(exports), as_of=as_of, run_id=run_id,
                       mode="full" if full else "incremental")
    publish(con, policy=policy, full=full)
    return staged


def tables(con) -> dict:
    return {
        "events": con.execute("SELECT * EXCLUDE (run_id, ingested_at, source_file, source_line, file_hash, source_pointer) FROM consent_events ORDER BY event_id").fetchall(),
        "status": con.execute("SELECT * EXCLUDE (source_file, source_line) FROM consent_status ORDER BY ALL").fetchall(),
        "links": con.execute("SELECT business, phone_e164, whatsapp_user_id, parent_user_id, previous_user_id, linked_at "
                             "FROM identifier_links ORDER BY ALL").fetchall(),
        "violations": con.execute("SELECT * EXCLUDE (source_file, source_line) FROM consent_violations ORDER BY ALL").fetchall(),
        "history": con.execute("SELECT * FROM consent_status_history ORDER BY ALL").fetchall(),
    }


def mart_rows(con) -> dict:
    return {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in marts.MARTS}


COMMON = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.slow  # `make test-slow`: whole runs on generated exports (the default run has a faster test per guarantee)
@COMMON
@given(export_sets())
def test_rows_are_conserved_and_a_second_run_changes_nothing(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("prop")
    write_exports(root / "exports", files)
    con = duckdb.connect(str(root / "w.duckdb"))
    ensure_schema(con)
    staged = run_plain(root / "exports", con, "r1")
    for f in staged.files:
        assert f.rows_read == f.events + f.quarantined + f.skipped, f
    ledger_plus_dupes = staged.events
    assert con.execute("SELECT count(*) FROM consent_events").fetchone()[0] == con.execute(
        "SELECT count(DISTINCT event_id) FROM staging.stg_consent_events").fetchone()[0] <= ledger_plus_dupes
    first = tables(con)
    run_plain(root / "exports", con, "r2")
    assert tables(con) == first
    # nobody is opted in without evidence
    missing = con.execute(
        "SELECT count(*) FROM consent_status WHERE status = 'opted_in' AND "
        "(consent_method IS NULL OR consent_at IS NULL OR channel IS NULL OR event_id IS NULL OR source_file IS NULL)"
    ).fetchone()[0]
    assert missing == 0
    # each history row keeps the channels its deciding and consent events have in the ledger
    assert con.execute("""
        SELECT count(*) FROM consent_status_history AS h
        LEFT JOIN consent_events AS d ON d.event_id = h.decided_by_event_id
        LEFT JOIN consent_events AS c ON c.event_id = h.consent_event_id
        WHERE h.decided_by_channel IS DISTINCT FROM d.channel OR h.consent_channel IS DISTINCT FROM c.channel
    """).fetchone()[0] == 0
    con.close()


# Each example runs the pipeline (and builds every mart) once per file: fewer examples keep `make test`
# within its budget; `make fuzz`-style long runs can raise them.
# Consent validity (rules, section 8): none, one number, or per purpose and country of the number.
VALIDITY = [None, 6, {"marketing": {"DE": 4, "default": 9}, "default": 12}]


@settings(COMMON, max_examples=8)
@given(export_sets(), st.randoms(use_true_random=False), st.sampled_from(VALIDITY),
       st.none() | st.lists(st.integers(0, 17 * 24), min_size=6, max_size=6))
@pytest.mark.slow  # `make test-slow`: whole runs on generated exports (the default run has a faster test per guarantee)
def test_files_arriving_one_by_one_in_any_order_give_the_same_warehouse(tmp_path_factory, files, rnd, validity, hours):
    """Files arrive one per night. With `hours`, the nights' clock moves forward (requests expire,
    consents pass their validity, future dates stop being future between nights; a row without a
    readable date takes its night's clock): the nights then equal a `--full` run at the last clock.
    Without, every night has one clock and the nights equal a single run of every file."""
    policy = Policy(consent_validity_days=validity)
    root = tmp_path_factory.mktemp("order")
    write_exports(root / "all", files)
    together = duckdb.connect(str(root / "together.duckdb"))
    ensure_schema(together)
    run_plain(root / "all", together, "r1", policy=policy)

    names = [n for n in files if n != "businesses.yaml"]
    rnd.shuffle(names)
    clocks = [datetime(2026, 11, 3) + timedelta(hours=h) for h in sorted(hours or [])[: len(names) - 1]] + [AS_OF]
    clocks = [AS_OF] * (len(names) - len(clocks)) + clocks
    if "businesses.yaml" in files:
        write_exports(root / "arriving", {"businesses.yaml": files["businesses.yaml"]})
    one_by_one = duckdb.connect(str(root / "one_by_one.duckdb"))
    ensure_schema(one_by_one)
    for n, name in enumerate(names):
        write_exports(root / "arriving", {name: files[name]})
        run_plain(root / "arriving", one_by_one, f"r{n}", as_of=clocks[n], policy=policy)
        for mart in marts.MARTS:  # as the nightly job does: only what the run changed, where it can
            marts.build(one_by_one, mart, policy, run_id=f"r{n}", full=False)
    # Marts built night by night equal marts built whole from the same warehouse.
    by_night = mart_rows(one_by_one)
    for mart in marts.MARTS:
        marts.build(one_by_one, mart, policy)
    assert mart_rows(one_by_one) == by_night
    nights = tables(one_by_one)
    run_plain(root / "arriving", one_by_one, "full", full=True, policy=policy)
    assert tables(one_by_one) == nights  # incremental nights equal a full rebuild at the last clock
    if hours is None:  # and, on one clock, the single run
        assert {k: v for k, v in nights.items() if k != "events"} == {
            k: v for k, v in tables(together).items() if k != "events"}


@st.composite
def histories(draw, contacts: list[str]) -> dict[str, list[tuple]]:
    """Per contact, transitions as consent_status_history holds them: few days, channels and
    statuses, so that several contacts' rows begin on the same day through the same channel."""
    out = {}
    for contact in contacts:
        rows, hour = [], draw(st.integers(0, 30))
        for _ in range(draw(st.integers(0, 4))):
            rows.append([draw(st.sampled_from(["acme", "beta"])) if not rows else rows[0][0],
                         draw(st.sampled_from(["marketing", "utility"])),
                         draw(st.sampled_from(["opted_in", "opted_in", "opted_out", "pending", "expired", "no_consent"])),
                         datetime(2026, 11, 1) + timedelta(hours=hour),
                         draw(st.sampled_from(["double_opt_in", "checkbox", None])),
                         draw(st.sampled_from(["web_form", "email_link", None])),
                         draw(st.sampled_from(["web_form", "email_link", None]))])
            hour += draw(st.integers(0, 60))
        ends = {}  # each (business, purpose) row ends where the next one of the same purpose begins
        for row in reversed(rows):
            row.insert(4, ends.get(row[1]))
            ends[row[1]] = row[3]
        out[contact] = [tuple(r) for r in rows]
    return out


@pytest.mark.slow  # `make test-slow`: whole runs on generated exports (the default run has a faster test per guarantee)
@settings(COMMON, max_examples=60)
@given(st.data())
def test_consent_daily_by_difference_equals_a_whole_build(tmp_path_factory, data):
    """An incremental night builds consent_daily from the mart it had plus the history rows
    it wrote less those it replaced. Generated histories, some contacts decided again (rows kept,
    ended elsewhere, added, removed), a clock that may move: the mart equals one built whole."""
    contacts = [f"+4915100000{n:02d}" for n in range(8)]
    before = data.draw(histories(contacts))
    touched = data.draw(st.lists(st.sampled_from(contacts), unique=True, max_size=5))
    after = dict(before)
    for contact in touched:  # decided again: a prefix kept (perhaps ended differently), a new tail
        kept = before[contact][: data.draw(st.integers(0, len(before[contact])))]
        tail = data.draw(histories([contact]))[contact]
        after[contact] = [r if data.draw(st.booleans()) else (*r[:4], None, *r[5:]) for r in kept] + tail
    previous = datetime(2026, 11, 1) + timedelta(days=data.draw(st.integers(0, 8)))
    clock = previous + timedelta(days=data.draw(st.integers(0, 3)))

    con = duckdb.connect(str(tmp_path_factory.mktemp("daily") / "w.duckdb"))
    ensure_schema(con)
    use_salt(con, "test-salt")
    columns = "business, purpose, status, valid_from, valid_to, consent_method, decided_by_channel, consent_channel"

    def history(rows: dict[str, list[tuple]]) -> list[tuple]:
        return [(c, *r) for c, rs in rows.items() for r in rs]

    def write(table: str, rows: list[tuple]) -> None:
        if rows:
            con.executemany(f"INSERT INTO {table} (contact_id, {columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    run = "INSERT INTO runs (run_id, mode, as_of, started_at, published_at, status) VALUES (?, 'incremental', ?, ?, ?, 'succeeded')"
    con.execute(run, ["r0", previous, previous, previous])
    write("consent_status_history", history(before))
    marts.build(con, "consent_daily", run_id="r0")  # what the previous night left

    con.execute(run, ["r1", clock, clock, clock + timedelta(minutes=1)])
    keys = [(before.get(c) or after.get(c) or [("acme",)])[0][0] + chr(31) + c for c in touched]
    con.execute("CREATE TABLE staging.stg_touched AS SELECT unnest(?::VARCHAR[]) AS contact_key", [keys])
    con.execute("CREATE TABLE staging.stg_run AS SELECT 'r1' AS run_id, 'incremental' AS mode, ?::TIMESTAMP AS as_of", [clock])
    con.execute("CREATE TABLE staging.stg_identifier_links AS SELECT * FROM identifier_links LIMIT 0")
    for kept in ("staging.stg_replaced_history", "staging.stg_decided_history"):
        con.execute(f"CREATE TABLE {kept} AS SELECT * FROM consent_status_history LIMIT 0")
    for kept in ("staging.stg_replaced_violations", "staging.stg_decided_violations"):
        con.execute(f"CREATE TABLE {kept} AS SELECT * FROM consent_violations LIMIT 0")
    for kept in ("staging.stg_replaced_status", "staging.stg_decided_status"):
        con.execute(f"CREATE TABLE {kept} AS SELECT * FROM consent_status LIMIT 0")
    write("staging.stg_replaced_history", history({c: before[c] for c in touched}))
    write("staging.stg_decided_history", history({c: after[c] for c in touched}))
    con.execute("DELETE FROM consent_status_history WHERE contact_id IN (SELECT unnest(?::VARCHAR[]))", [touched])
    write("consent_status_history", history({c: after[c] for c in touched}))

    marts.build(con, "consent_daily", run_id="r1", full=False)
    assert marts.last_mode(con, "consent_daily") == "incremental"
    by_difference = con.execute("SELECT * FROM consent_daily ORDER BY ALL").fetchall()
    marts.build(con, "consent_daily")
    assert con.execute("SELECT * FROM consent_daily ORDER BY ALL").fetchall() == by_difference
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'consent_daily'").fetchall())
    assert {types[c] for c in ("opt_ins", "opt_outs", "confirmations", "net_change", "sendable_audience")} == {"BIGINT"}
