"""Quarantined rows count under a business, as their events would have: the row's WhatsApp number's
business, else its channel folder's; a number no business claims leaves the row unattributed. The
quarantine_summary mart and the dashboard count them per business."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, query, run_cli
from tests.test_dashboard import BUSINESSES, tiles, views  # acme_shoes: web form, WhatsApp, its number; acme_bank

UNCLAIMED = "106540359999999"


def _webhook(phone_number_id: str, text: str, timestamp: str) -> str:
    """A Cloud API messages webhook carrying one text message from +44 7400 123456."""
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
            "messages": [{"from": "447400123456", "id": f"wamid.Q{timestamp}", "timestamp": timestamp,
                          "type": "text", "text": {"body": text}}]}}]}]})


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quarantine_business")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    (exports / "businesses.yaml").write_text(BUSINESSES)
    # delivery statuses through acme_shoes' number: skipped items, read in columns
    shutil.copy(FIXTURES / "sends" / "whatsapp" / "statuses_2026-11-06.jsonl", exports / "whatsapp")
    # acme_shoes' web form: a ragged row and an unreadable date
    (exports / "web_form" / "signups_2026-11-05.csv").write_text(
        "phone,country,event_type,purposes,occurred_at\n"
        "+49 151 1234 5679,,opt_in,marketing\n"
        "+49 151 1234 5670,,opt_in,marketing,yesterday\n")
    # acme_bank's email links: a file that is not text at all is refused whole
    (exports / "email_link" / "doi_2026-11-05.csv").write_bytes(b"\xff\xfe\x00\x00garbage\x00\xff" * 8)
    # the WhatsApp folder (acme_shoes'): a line that is not JSON, and a STOP through a number no business claims
    (exports / "whatsapp" / "webhooks_2026-11-05.jsonl").write_text(
        "{not json\n" + _webhook(UNCLAIMED, "STOP", "1793869200") + "\n")
    path = root / "wh" / "consent.duckdb"
    assert run_cli(exports, path) == 0
    return path


def _by_file(path: Path) -> dict[str, set]:
    rows = query(path, "SELECT source_file, business FROM quarantine")
    found: dict[str, set] = {}
    for source_file, business in rows:
        found.setdefault(source_file, set()).add(business)
    return found


def test_each_quarantined_row_counts_under_the_business_its_event_would_have_had(warehouse):
    found = _by_file(warehouse)
    assert found["web_form/signups_2026-11-05.csv"] == {"acme_shoes"}
    assert found["email_link/doi_2026-11-05.csv"] == {"acme_bank"}  # the whole file, refused
    reasons = dict(query(warehouse, "SELECT business, reason FROM quarantine "
                                    "WHERE source_file = 'whatsapp/webhooks_2026-11-05.jsonl' ORDER BY source_line"))
    # the unreadable line counts under the folder's business; the unclaimed number under none
    assert set(reasons) == {"acme_shoes", None}
    assert "not claimed by any business" in reasons[None]
    # every row is counted once, attributed or not: rows read = events + quarantined + skipped
    files = query(warehouse, "SELECT sum(quarantined) FROM source_files")[0][0]
    assert files == query(warehouse, "SELECT count(*) FROM quarantine")[0][0]


def test_skipped_items_count_under_their_business_too(warehouse):
    rows = query(warehouse, "SELECT source_file, business, count(*) FROM skipped_items GROUP BY ALL ORDER BY ALL")
    assert ("whatsapp/statuses_2026-11-06.jsonl", "acme_shoes") in {(f, b) for f, b, _ in rows}
    assert {b for _, b, _ in rows} == {"acme_shoes"}  # every WhatsApp item here came through its number or folder


def test_the_quarantine_summary_counts_rows_per_business_and_the_unattributed_apart(warehouse):
    per_business = dict(query(warehouse, "SELECT coalesce(business, '(not attributed)'), count(*) FROM quarantine GROUP BY ALL"))
    summary = dict(query(warehouse, "SELECT business, sum(rows) FROM quarantine_summary GROUP BY ALL"))
    assert summary == per_business
    assert summary["(not attributed)"] == 1 and summary["acme_bank"] >= 1 and summary["acme_shoes"] >= 3


def test_the_dashboard_shows_each_business_its_own_quarantined_rows(warehouse):
    found = views((warehouse.parent / "dashboard.html").read_text())
    per_business = dict(query(warehouse, "SELECT business, count(*) FROM quarantine WHERE business IS NOT NULL GROUP BY ALL"))
    total = query(warehouse, "SELECT count(*) FROM quarantine")[0][0]
    assert tiles(found[""][1])["rows quarantined"] == total
    for business in ("acme_bank", "acme_shoes"):
        body = found[business][1]
        assert tiles(body)["rows quarantined"] == per_business[business], business
        # its reasons chart, and a word on the row no business is named on
        assert re.search(r"Quarantine reasons \(1 more rows are not attributed to a business", body), business
    # the bank's chart names the refused file's reason only, not the web form's ragged row
    bank = found["acme_bank"][1].split("Quarantine reasons", 1)[1].split("</section>", 1)[0]
    assert "ragged row" not in bank and "ragged row" in found["acme_shoes"][1]
