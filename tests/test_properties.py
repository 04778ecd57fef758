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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent import marts
from consent.policy import Policy, load_channels
from consent.migrations import ensure_schema
from consent.warehouse import publish, stage_run

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
    staged = stage_run(connect, exports, policy=policy, channels=load_channels(exports), as_of=as_of, run_id=run_id,
                       mode="full" if full else "incremental")
    publish(con, policy=policy, salt="test-salt", full=full)
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
        "SELECT count(DISTINCT event_id) FROM stg_consent_events").fetchone()[0] <= ledger_plus_dupes
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
            marts.build(one_by_one, mart, "test-salt", policy, run_id=f"r{n}", full=False)
    # Marts built night by night equal marts built whole from the same warehouse.
    by_night = mart_rows(one_by_one)
    for mart in marts.MARTS:
        marts.build(one_by_one, mart, "test-salt", policy)
    assert mart_rows(one_by_one) == by_night
    nights = tables(one_by_one)
    run_plain(root / "arriving", one_by_one, "full", full=True, policy=policy)
    assert tables(one_by_one) == nights  # incremental nights equal a full rebuild at the last clock
    if hours is None:  # and, on one clock, the single run
        assert {k: v for k, v in nights.items() if k != "events"} == {
            k: v for k, v in tables(together).items() if k != "events"}
