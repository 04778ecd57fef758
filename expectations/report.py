"""A run's data-quality report and the index of every run's report.

Plain HTML from the templates beside this module, self-contained: the style is
inline and there is no script and no external URL, so the pages read the same
offline, from a file share or an archive. One folder per run,
`<warehouse folder>/data_docs/<run id>/` (`index.html`, and `report.json`
that the index is built from), and `data_docs/index.html` listing every run,
newest first, with each suite's result.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
PAGE = "index.html"
SUMMARY = "report.json"


@lru_cache(maxsize=1)
def _templates():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def result_of(outcome) -> str:
    """`failed` (an ERROR expectation failed), `warnings` (only WARN ones did) or `passed`."""
    return "failed" if outcome.errors else "warnings" if outcome.warnings else "passed"


def write_run_report(docs_dir: Path, outcomes: list, written_at: datetime | None = None) -> Path:
    """Write the run's page and its summary (what the index reads) from its suites' outcomes
    (`expectations.runner.SuiteOutcome`); the page's path."""
    written = (written_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    suites = [{
        "suite": o.suite, "rows": o.row_count, "result": result_of(o), "expectations": len(o.results),
        "failed": len(o.errors) + len(o.warnings),
    } for o in outcomes]
    summary = {"run_id": docs_dir.name, "written_at": written.isoformat(), "suites": suites}
    page = _templates().get_template("run_report.html").render(
        run=summary, outcomes=[(o, result_of(o)) for o in outcomes], index=f"../{PAGE}")
    docs_dir.mkdir(parents=True, exist_ok=True)
    _write(docs_dir / SUMMARY, json.dumps(summary, indent=1))
    _write(docs_dir / PAGE, page)
    return docs_dir / PAGE


def write_runs_index(docs_root: Path) -> Path:
    """Write `docs_root/index.html`: every run's report, newest first, each suite's result."""
    page = _templates().get_template("runs_index.html").render(runs=runs_in(docs_root))
    _write(docs_root / PAGE, page)
    return docs_root / PAGE


def runs_in(docs_root: Path) -> list[dict]:
    """The summary of every run folder under `docs_root`, newest first. A folder of an older
    version (GX's own Data Docs, no summary) is listed by its time, without suites."""
    runs = []
    for folder in (p for p in docs_root.iterdir() if p.is_dir()) if docs_root.is_dir() else ():
        summary, page = folder / SUMMARY, folder / PAGE
        if summary.is_file():
            try:
                runs.append({**json.loads(summary.read_text(encoding="utf-8")), "older": False})
                continue
            except (ValueError, OSError):
                pass  # a damaged summary: listed like an older page, never dropped
        if page.is_file():
            stamp = datetime.fromtimestamp(page.stat().st_mtime, timezone.utc).isoformat()
            runs.append({"run_id": folder.name, "written_at": stamp, "suites": [], "older": True})
    return sorted(runs, key=lambda r: (r["written_at"], r["run_id"]), reverse=True)


def _write(path: Path, text: str) -> None:
    """Replace `path` whole (a reader never sees half a page; a full disk leaves the old one).
    One writer at a time: pages are written when a run ends, under the run lock."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
