"""The data-quality report of each run and the index of runs: self-contained pages that read offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, query, run_cli

SUITES = ("staged_opt_ins", "consent_events", "consent_status", "opt_in_notices")
# An opt-in without its consent method: an ERROR expectation of `staged_opt_ins` fails on line 2.
NO_METHOD = ("phone,country,event_type,purposes,occurred_at,consent_method,notice_version\n"
             "+4915201234571,,opt_in,marketing,2026-11-05T09:00:00Z,,web-v3\n")
CLEAN = ("phone,country,event_type,purposes,occurred_at,consent_method,notice_version\n"
         "+4915201234572,,opt_in,marketing,2026-11-06T09:00:00Z,checkbox,web-v3\n")
EXTERNAL = re.compile(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|<script|<link|@import|\bsrc=", re.IGNORECASE)


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> tuple[Path, list[str]]:
    """Three nights: one with an opt-in missing its method (exit 1), one clean, one with nothing new."""
    root = tmp_path_factory.mktemp("docs")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    (exports / "web_form" / "no_method.csv").write_text(NO_METHOD)
    warehouse = root / "wh" / "consent.duckdb"
    assert run_cli(exports, warehouse) == 1
    (exports / "web_form" / "clean.csv").write_text(CLEAN)
    assert run_cli(exports, warehouse, as_of="2026-11-11T00:00:00Z") == 0
    assert run_cli(exports, warehouse, as_of="2026-11-12T00:00:00Z") == 0
    runs = [r for (r,) in query(warehouse, "SELECT run_id FROM runs ORDER BY started_at")]
    assert len(runs) == 3
    return warehouse.parent / "data_docs", runs


def suite_results(page: str) -> dict[str, str]:
    """suite -> result, as the report's summary table shows them."""
    return dict(re.findall(r'<td><a href="#(\w+)">\1</a></td>\s*<td><span class="result (\w+)">', page))


# Each suite's Dagster check, whose outcome the run recorded in `runs.check_outcomes`.
CHECKS = {"staged_opt_ins": "stg_consent_events.staged_opt_ins_have_evidence",
          "consent_events": "consent_events.ledger_rows_are_well_formed",
          "consent_status": "consent_status.opted_in_rows_have_evidence",
          "opt_in_notices": "consent_notices.opt_in_notices_meet_policy"}


def recorded_results(warehouse: Path, run_id: str) -> dict[str, str]:
    ((outcomes,),) = query(warehouse, "SELECT check_outcomes FROM runs WHERE run_id = ?", [run_id])
    outcomes = json.loads(outcomes)
    return {suite: "passed" if outcomes[check]["passed"] else
            "failed" if outcomes[check]["severity"] == "ERROR" else "warnings" for suite, check in CHECKS.items()}


def test_each_run_has_a_report_listing_every_suite_with_its_result(nights):
    docs, (first, second, third) = nights
    warehouse = docs.parent / "consent.duckdb"
    failed = (docs / first / "index.html").read_text()
    assert suite_results(failed) == recorded_results(warehouse, first)
    assert suite_results(failed)["staged_opt_ins"] == "failed"
    # The failing row by its file and line, never by its number.
    assert "web_form/no_method.csv: 2</code>" in failed and "15201234571" not in failed
    assert suite_results((docs / second / "index.html").read_text()) == recorded_results(warehouse, second)
    assert set(suite_results((docs / second / "index.html").read_text()).values()) == {"passed"}
    quiet = (docs / third / "index.html").read_text()  # nothing new: every suite passed on 0 rows
    assert suite_results(quiet) == dict.fromkeys(SUITES, "passed") == recorded_results(warehouse, third)
    assert quiet.count("nothing new to check") == len(SUITES)


def test_no_page_loads_anything_from_outside(nights):
    docs, runs = nights
    pages = [docs / "index.html", *(docs / run / "index.html" for run in runs)]
    for page in pages:
        text = page.read_text()
        assert EXTERNAL.search(text) is None, (page, EXTERNAL.search(text))
        assert "<style>" in text  # styled inline
    # Every link is relative, to another page of the folder or an anchor of the same page.
    for page in pages:
        for target in re.findall(r'href="([^"]+)"', page.read_text()):
            assert target.startswith("#") or (page.parent / target.split("#")[0]).resolve().is_file(), (page, target)


def test_the_index_links_every_run_newest_first_with_each_suites_result(nights):
    docs, runs = nights
    index = (docs / "index.html").read_text()
    assert re.findall(r'<a href="([\w-]+)/index.html">', index) == runs[::-1]
    rows = index.split("<tr>")[2:]  # after the header row
    first = next(row for row in rows if runs[0] in row)
    assert "staged_opt_ins: failed" in first and "consent_status: warnings" in first
    assert all(f"{suite}: passed" in rows[0] for suite in SUITES)
    assert (docs / runs[0] / "index.html").read_text().count('href="../index.html"') == 1  # back to the index


def test_an_older_gx_page_is_listed_not_dropped(nights, tmp_path):
    from expectations.report import write_runs_index

    docs, runs = nights
    copy = tmp_path / "data_docs"
    shutil.copytree(docs, copy)
    (copy / "gx-era-run").mkdir()
    (copy / "gx-era-run" / "index.html").write_text("<html>GX</html>")
    (copy / runs[1] / "report.json").write_text("{damaged")
    index = write_runs_index(copy).read_text()
    assert set(re.findall(r'<a href="([\w-]+)/index.html">', index)) == {*runs, "gx-era-run"}
    assert index.count("older page</span>") == 2
    assert json.loads((copy / runs[0] / "report.json").read_text())["run_id"] == runs[0]


def test_the_index_reads_in_a_headless_browser_offline(nights, tmp_path):
    docs, runs = nights
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium where apt-get is available)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", (docs / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    assert "Data quality: every run" in text and all(run in text for run in runs)
    assert "staged_opt_ins: failed" in text
