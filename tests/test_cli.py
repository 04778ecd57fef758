"""The `consent` command as a user meets it: --version, help with examples, one line per mistake,
DuckDB's hints kept, the run's named progress, and the key warning only where it matters."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import AS_OF, FIXTURES

REPO = Path(__file__).resolve().parents[1]
AUDIENCE = "phone,name\n+4915112345678,Ana\n0151 12345679,Ben\n"
KEY_WARNING = "CONSENT_WAREHOUSE_KEY is not set"
# The steps of `consent_job`, in an order its dependencies allow; every check follows its asset's step.
ASSET_STEPS = ["stg_consent_events", "published_warehouse", "retention_purge", "compliance_marts", "compliance_dashboard"]
DURATION = r"(\d+ min \d\d s|[\d.]+ s)"
DONE = re.compile(rf"^(?P<step>.+): (?P<outcome>done|passed|failed \((WARN|ERROR)\)|FAILED) in {DURATION}$")
COUNTED = re.compile(rf"^(?P<step>\w+): (?P<counter>[a-z ]+): (?P<done>[\d,]+)/(?P<total>[\d,]+)( \([\d,]+/s\))?, "
                     rf"{DURATION}(, about .+ left)?$")


def consent(*args: str, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    """The entry point in a fresh process, as a user runs it, with no CONSENT_* setting from the test's environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=600, cwd=REPO, env=environment)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """One run on the fixture exports without a key, its standard error not a terminal."""
    import shutil

    root = tmp_path_factory.mktemp("ran")
    exports = root / "exports"
    shutil.copytree(FIXTURES / "exports", exports)
    warehouse = root / "wh" / "consent.duckdb"
    done = consent("run", "--exports", str(exports), "--warehouse", str(warehouse), "--as-of", AS_OF)
    assert done.returncode == 0, done.stderr[-3000:]
    return exports, warehouse, done


def audience(folder: Path) -> str:
    path = folder / "audience.csv"
    path.write_text(AUDIENCE, encoding="utf-8")
    return str(path)


def job_checks() -> list[tuple[str, str]]:
    """(check, asset) of every asset check `consent_job` runs."""
    from pipelines.definitions import build_definitions

    job = build_definitions().resolve_job_def("consent_job")
    return sorted((key.name, key.asset_key.to_user_string()) for key in job.asset_layer.asset_graph.asset_check_keys)


# --version and help ------------------------------------------------------------------------------

def test_version_names_the_package_duckdb_and_dagster(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"consent {version('whatsapp-consent-warehouse')} (")
    assert f"DuckDB {version('duckdb')}" in line and f"Dagster {version('dagster')}" in line
    assert len(line.splitlines()) == 1


def subcommand_names() -> list[str]:
    from cli.parser import _parser, subcommands

    return list(subcommands(_parser()))


def test_every_command_is_listed_with_a_line_of_its_own(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    listing = capsys.readouterr().out
    names = subcommand_names()
    assert len(names) >= 11 and {"run", "sql", "audit", "export", "check", "erase", "access", "hash", "runs",
                                 "migrate", "rules"} <= set(names)
    for name in names:
        assert re.search(rf"^    {name}\s+\S", listing, re.M), f"{name} has no line in `consent --help`"


@pytest.mark.parametrize("name", subcommand_names())
def test_every_command_help_has_a_description_and_examples_that_parse(name, capsys):
    from cli.parser import _parser, subcommands

    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    description = subcommands(_parser())[name].description
    assert description and len(description.splitlines()) == 1 and description in " ".join(text.split())
    examples = re.search(r"^examples?:\n((?:  .+\n?)+)", text, re.M)
    assert examples, f"`consent {name} --help` shows no example"
    for example in examples.group(1).splitlines():
        words = shlex.split(example)
        assert words[:2] == ["consent", name], example
        assert _parser().parse_args(words[1:]).command == name  # the example is a valid command line


def test_docs_list_every_command_as_the_parser_declares_it():
    from cli.docs import DOC, generated_part, render

    assert generated_part(DOC.read_text(encoding="utf-8")) == render(), "run `python -m cli.docs --write`"
    for name in subcommand_names():
        assert f"### `consent {name}`" in render()


# One line per mistake ------------------------------------------------------------------------------

def not_a_warehouse(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "given" / "consent.duckdb"
    path.parent.mkdir()
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("business,purpose\nacme,marketing\n")
    return path


@pytest.mark.parametrize("kind, said", [
    ("text", "is not a DuckDB database file"), ("empty", "is an empty file"), ("folder", "is a folder, not a DuckDB database file"),
])
@pytest.mark.parametrize("command", [
    ["runs"], ["sql", "SELECT 1"], ["audit", "violations"], ["export", "--suppression"], ["migrate"],
    ["hash", "+4915112345678"], ["access", "+4915112345678"], ["erase", "+4915112345678"],
    ["check", "{audience}", "--purpose", "marketing"],
])
def test_a_warehouse_that_is_no_duckdb_file_is_one_line_and_exit_2(tmp_path, capsys, kind, said, command):
    path = not_a_warehouse(tmp_path, kind)
    command = [audience(tmp_path) if word == "{audience}" else word for word in command]
    assert main([*command, "--warehouse", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()] and err.startswith(f"consent: the warehouse {path} {said}"), err
    assert sorted(p.name for p in path.parent.iterdir()) == ["consent.duckdb"]  # no lock, no read copy beside it


@pytest.mark.parametrize("kind", ["text", "empty", "folder"])
def test_a_run_into_a_file_that_is_no_warehouse_stops_before_any_step(tmp_path, exports, kind):
    path = not_a_warehouse(tmp_path, kind)
    done = consent("run", "--exports", str(exports), "--warehouse", str(path), "--as-of", AS_OF)
    assert done.returncode == 2
    assert done.stderr.startswith(f"consent: the warehouse {path} ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_duckdb_file_without_consent_tables_is_one_line(tmp_path, capsys):
    import duckdb

    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE orders (id INTEGER)").close()
    assert main(["runs", "--warehouse", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("consent: the warehouse holds no consent tables"), err


@pytest.mark.parametrize("command, said", [
    (["run", "--exports", "{missing}", "--as-of", AS_OF, "--warehouse", "{wh}"], "consent: exports folder not found: {missing}"),
    (["erase", "+4915112345678", "--exports", "{missing}", "--warehouse", "{wh}"], "consent: exports folder not found: {missing}"),
    (["export", "--suppression", "--exports", "{missing}", "--warehouse", "{wh}"], "consent: exports folder not found: {missing}"),
    (["check", "{audience}", "--purpose", "marketing", "--exports", "{missing}", "--warehouse", "{wh}"],
     "consent: exports folder not found: {missing}"),
    (["run", "--exports", str(FIXTURES / "exports"), "--as-of", "yesterday", "--warehouse", "{wh}"],
     "consent: --as-of: not an ISO 8601 timestamp: 'yesterday'"),
    (["run", "--exports", str(FIXTURES / "exports"), "--as-of", "2026-13-45", "--warehouse", "{wh}"],
     "consent: --as-of: not an ISO 8601 timestamp: '2026-13-45'"),
    (["runs", "--limit", "many", "--warehouse", "{wh}"], "consent: argument --limit: invalid int value: 'many'"),
    (["rules", "--bogus"], "consent: unrecognized arguments: --bogus"),
])
def test_a_mistake_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys, command, said):
    missing = str(tmp_path / "exportz")
    warehouse = tmp_path / "wh" / "consent.duckdb"
    given = {"{missing}": missing, "{wh}": str(warehouse), "{audience}": audience(tmp_path)}
    assert main([given.get(word, word) for word in command]) == 2
    err = capsys.readouterr().err
    assert err == said.replace("{missing}", missing) + "\n"
    assert not warehouse.exists() and not warehouse.parent.exists()  # nothing was written


def test_mistakes_against_a_warehouse_are_one_line_and_exit_2(ran, tmp_path, capsys):
    exports, warehouse, _ = ran
    checks_logged = "SELECT count(*) AS n FROM send_checks"
    before = consent("sql", checks_logged, "--warehouse", str(warehouse), "--format", "csv")
    assert before.returncode == 0
    given = audience(tmp_path)
    for command, said in (
        (["export", "--suppression", "--out", str(tmp_path / "no" / "such.csv")], f"--out {tmp_path / 'no' / 'such.csv'}: the folder"),
        (["export", "--suppression", "--out", str(tmp_path)], f"--out {tmp_path} is a folder"),
        (["check", given, "--purpose", "marketing", "--at", "soon"], "--at: not an ISO 8601 timestamp: 'soon'"),
        (["check", given, "--purpose", "marketing", "--out", str(tmp_path / "no" / "d.csv")], "the folder"),
        (["access", "+4915112345678", "--out", str(tmp_path)], "is a folder"),
        (["audit", "evidence", "not a number"], "not a valid phone number"),
    ):
        assert main([*command, "--warehouse", str(warehouse)]) == 2, command
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("consent: ") and said in err, (command, err)
    assert not (tmp_path / "no").exists()
    after = consent("sql", checks_logged, "--warehouse", str(warehouse), "--format", "csv")
    assert after.returncode == 0 and after.stdout == before.stdout  # no refused check was logged


def test_sql_keeps_duckdbs_hints_on_its_one_line(ran, capsys):
    _, warehouse, _ = ran
    assert main(["sql", "SELECT * FROM consent_statu", "--warehouse", str(warehouse)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        'consent: SQL error: Catalog Error: Table with name consent_statu does not exist! Did you mean "consent_status"?'
    ]
    assert main(["sql", "SELECT phone FROM consent_status", "--warehouse", str(warehouse)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and 'Candidate bindings: "phone_e164"' in err and "LINE 1" not in err


# The key warning only where it matters ----------------------------------------------------------

def test_the_key_warning_comes_once_from_the_run_and_never_from_other_commands(ran, tmp_path, capsys, monkeypatch):
    exports, warehouse, done = ran
    assert done.stderr.count(KEY_WARNING) == 1 and done.stderr.startswith("consent: warning: " + KEY_WARNING)
    monkeypatch.delenv("CONSENT_WAREHOUSE_KEY", raising=False)
    assert main(["rules"]) == 0
    for command in (["runs"], ["sql", "SELECT 1"], ["audit", "violations"], ["export", "--suppression"],
                    ["access", "+4915112345678", "--out", str(tmp_path / "a.json")], ["hash", "+4915112345678"],
                    ["migrate"], ["check", audience(tmp_path), "--purpose", "marketing", "--out", str(tmp_path / "d.csv")],
                    ["erase", "+4915112399999", "--exports", str(exports)]):
        assert main([*command, "--warehouse", str(warehouse)]) in (0, 3), command
        assert KEY_WARNING not in capsys.readouterr().err, command


# Named progress -------------------------------------------------------------------------------------

def test_a_run_names_every_step_in_order_with_its_elapsed_time(ran):
    _, _, done = ran
    lines = [line for line in done.stderr.splitlines() if KEY_WARNING not in line]
    ended = [(m["step"], m["outcome"]) for m in map(DONE.match, lines) if m]
    steps = [step for step, _ in ended]
    assert [s for s in steps if s in ASSET_STEPS] == ASSET_STEPS
    checks = [f"check {check} of {asset}" for check, asset in job_checks()]
    assert sorted(s for s in steps if s.startswith("check ")) == sorted(checks)
    assert len(steps) == len(ASSET_STEPS) + len(checks)
    from assets.warehouse import PUBLISHED
    from consent.marts import MARTS

    for check, asset in job_checks():  # a check after the step that made its asset
        maker = "published_warehouse" if asset in PUBLISHED else "compliance_marts" if asset in MARTS else asset
        assert steps.index(maker) < steps.index(f"check {check} of {asset}")
    assert all(outcome in ("done", "passed", "failed (WARN)") for _, outcome in ended), ended
    assert re.fullmatch(rf"run: {len(steps)} steps in {DURATION}", lines[-1])
    # Every other line is a counting step's progress, inside its step, before the step's end.
    assert all(COUNTED.match(line) or DONE.match(line) for line in lines[:-1]), lines
    for step, counter in (("stg_consent_events", "reading files"), ("stg_consent_events", "building events"),
                          ("published_warehouse", "reconciling contacts"), ("compliance_marts", "building marts")):
        last = max(i for i, line in enumerate(lines) if line.startswith(f"{step}: {counter}: "))
        assert COUNTED.match(lines[last])["done"] == COUNTED.match(lines[last])["total"]  # its last count is whole
        assert last < lines.index(next(l for l in lines if l.startswith(f"{step}: done in ")))
        if step != ASSET_STEPS[0]:
            previous = ASSET_STEPS[ASSET_STEPS.index(step) - 1]
            assert lines.index(next(l for l in lines if l.startswith(f"{previous}: done in "))) < last
    assert "+4915112345678" not in done.stderr


def test_on_a_terminal_the_run_shows_a_live_display(tmp_path, exports):
    """Standard error a terminal: rich draws the steps (and leaves each with its outcome); standard
    output, the report, is unchanged."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # 200 columns: no line cut
    drawn = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()  # read while the run draws: a full terminal buffer would block it
    warehouse = tmp_path / "wh" / "consent.duckdb"
    try:
        done = consent("run", "--exports", str(exports), "--warehouse", str(warehouse), "--as-of", AS_OF,
                       stderr=follower)
    finally:
        os.close(follower)
    reader.join(timeout=30)
    os.close(leader)
    assert done.returncode == 0
    screen = drawn.decode("utf-8", "replace")
    assert "\x1b[" in screen  # drawn with terminal controls, not printed line by line
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    for step in ASSET_STEPS:
        assert f"{step}: done" in text, step
    assert "check ledger_rows_are_well_formed of consent_events: passed" in text
    assert "run succeeded" in done.stdout and "reading files" not in done.stdout


def test_the_cli_is_a_tree_of_short_modules():
    """The entry point, the parser and one module per command group; no function over 60 lines."""
    import ast

    modules = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "cli").rglob("*.py"))
    assert {"cli/main.py", "cli/parser.py", "cli/commands/run.py", "cli/commands/sql.py"} <= set(modules)
    for module in modules:
        tree = ast.parse((REPO / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{module}: {node.name} has {node.end_lineno - node.lineno + 1} lines"
