"""`consent sql` without a query: DuckDB's shell on the read copy, read-only, fed here through a pipe."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import query

KEY = "a shell key 7f3a"
CONSENT = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main(sys.argv[1:]))"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory, first_run_folder) -> Path:
    root = tmp_path_factory.mktemp("shell")
    shutil.copytree(first_run_folder, root / "wh")
    return root / "wh" / "consent.duckdb"


def shell(warehouse: Path, text: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CONSENT_WAREHOUSE_KEY"}
    if key:
        env["CONSENT_WAREHOUSE_KEY"] = key
    return subprocess.run([*CONSENT, "sql", "--warehouse", str(warehouse)], input=text, capture_output=True,
                          text=True, env=env, timeout=120, cwd=Path(__file__).resolve().parent.parent)


def csv_rows(text: str) -> list[tuple]:
    return [tuple(r) for r in csv.reader(io.StringIO(text))][1:]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_piped_query_runs_on_the_read_copy_and_exits_0(plain):
    done = shell(plain, ".mode csv\nSELECT status, count(*) AS n FROM consent_status GROUP BY ALL ORDER BY ALL;\n")
    assert done.returncode == 0, done.stderr
    expected = query(plain, "SELECT status, count(*) FROM consent_status GROUP BY ALL ORDER BY ALL")
    assert csv_rows(done.stdout) == [(s, str(n)) for s, n in expected] and expected
    # The audits' table macros are there, as in `consent sql`.
    macro = shell(plain, ".mode csv\nSELECT count(*) AS n FROM linked_numbers();\n")
    assert macro.returncode == 0 and csv_rows(macro.stdout) == [(str(query(plain, "SELECT count(DISTINCT (business, whatsapp_user_id)) FROM identifier_links WHERE phone_e164 IS NOT NULL AND whatsapp_user_id IS NOT NULL")[0][0]),)]


@pytest.mark.parametrize("statement, says", [
    ("CREATE TABLE notes (a INTEGER);", "read-only mode"),
    ("DELETE FROM consent_status;", "read-only mode"),
    ("SELECT * FROM read_csv('/etc/hostname');", "file system operations are disabled"),
    ("COPY consent_status TO '{out}';", "disabled"),
    ("ATTACH '{out}' AS other;", "disabled"),
    ("SET enable_external_access = true;", "configuration has been locked"),
    (".shell touch {out}", "safe"),
    (".output {out}", "safe"),
])
def test_the_shell_refuses_writes_other_files_and_commands(plain, tmp_path, statement, says):
    before = digest(plain), digest(plain.with_name("consent.read.duckdb"))
    out = tmp_path / "leak.csv"
    done = shell(plain, statement.format(out=out) + "\nSELECT 1;\n")
    assert done.returncode == 1 and says in done.stderr, done.stderr
    assert not out.exists()
    assert (digest(plain), digest(plain.with_name("consent.read.duckdb"))) == before


def test_duckdbs_hints_are_kept(plain):
    done = shell(plain, "SELECT * FROM consent_statuss;\n")
    assert done.returncode == 1 and 'Did you mean "consent_status"' in done.stderr


def test_an_encrypted_warehouse_opens_with_its_key_never_on_the_command_line(tmp_path):
    from consent.storage.access import Warehouse
    from cli.sql_shell import shell_commands

    path = tmp_path / "enc" / "consent.duckdb"
    warehouse = Warehouse(path=str(path), encryption_key=KEY)
    with warehouse.connect():  # an empty warehouse of this schema, encrypted
        pass
    warehouse.publish_read_copy()
    assert all(KEY not in command for command in shell_commands(warehouse, warehouse.read_copy))
    done = shell(path, ".mode csv\nSELECT count(*) AS n FROM consent_status;\nSELECT getvariable('consent_key') IS NULL AS gone;\n",
                 key=KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["n", "0", "gone", "true"]
    assert shell(path, "SELECT getenv('CONSENT_WAREHOUSE_KEY');\n", key=KEY).returncode == 1  # getenv is off too
    refused = shell(path, "SELECT 1;\n")  # no key: one line, exit 2, the shell never starts
    assert refused.returncode == 2 and refused.stderr.strip().endswith("it is encrypted (set CONSENT_WAREHOUSE_KEY)")
