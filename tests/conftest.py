"""Shared fixtures: a copy of the fixture exports and a warehouse file per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest
from hypothesis import settings

# PostgreSQL and an S3 endpoint for the DuckLake tests, started once per test process.
from tests.services import postgres_catalog, postgres_service, s3_service  # noqa: F401

# CI runs the property and fuzz tests on a fixed seed, so a red build is reproducible;
# locally every run explores new examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

FIXTURES = Path(__file__).parent / "fixtures"
AS_OF = "2026-11-10T00:00:00Z"


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    target = tmp_path / "exports"
    shutil.copytree(FIXTURES / "exports", target)
    return target


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    return tmp_path / "wh" / "consent.duckdb"


@pytest.fixture(scope="session")
def first_run_folder(tmp_path_factory) -> Path:
    """The warehouse's folder after `run_cli` over the fixture exports (no CONSENT_* setting), made
    once per test process: a plain first run costs seconds, and many tests only start from one."""
    root = tmp_path_factory.mktemp("first_run")
    shutil.copytree(FIXTURES / "exports", root / "exports")
    with pytest.MonkeyPatch.context() as settings_unset:
        for name in [n for n in os.environ if n.startswith("CONSENT_")]:
            settings_unset.delenv(name)
        assert run_cli(root / "exports", root / "wh" / "consent.duckdb") == 0
    return root / "wh"


@pytest.fixture
def after_first_run(first_run_folder: Path, exports: Path, warehouse_path: Path) -> Path:
    """`warehouse_path` as `run_cli(exports, warehouse_path)` leaves it: a copy of the folder
    `first_run_folder` holds (the warehouse, its read copy, salt, dashboard and reports). The
    exports are fresh copies of the same files (a change time of their own): the next run hashes
    them and finds them unchanged."""
    shutil.copytree(first_run_folder, warehouse_path.parent)
    return warehouse_path


def query(path: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def run_cli(exports: Path, warehouse: Path, *extra: str, as_of: str = AS_OF) -> int:
    from cli.main import main

    return main(["run", "--exports", str(exports), "--warehouse", str(warehouse), "--as-of", as_of, *extra])


def statuses(path: Path) -> dict[tuple[str, str], str]:
    return {(p, purpose): s for p, purpose, s in query(path, "SELECT phone_e164, purpose, status FROM consent_status")}
