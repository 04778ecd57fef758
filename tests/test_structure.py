"""The structure a maintainer relies on: one-way layers, short warehouse steps, one rule registry."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_no_function_in_the_warehouse_module_is_longer_than_60_lines():
    tree = ast.parse((REPO / "consent" / "warehouse.py").read_text())
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_only_the_definitions_module_of_pipelines_imports_assets():
    importers = []
    for path in sorted((REPO / "pipelines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "assets" or n.startswith("assets.") for n in names):
                importers.append(path.name)
    assert set(importers) == {"definitions.py"}


def test_every_publish_step_sql_file_is_used_and_parses():
    import duckdb

    from consent import sql

    code = "\n".join(p.read_text() for p in (REPO / "consent").rglob("*.py"))
    for path in sorted(sql.FOLDER.glob("*.sql")):
        assert f'"{path.stem}"' in code, f"{path.name} is not run by any step"
        for statement in sql.statements(path.stem):
            assert statement.strip(), path.name
    con = duckdb.connect()
    sql.use_salt(con, "s")
    assert con.execute("SELECT salted_hash('+4915112345678')").fetchone()[0]


def test_the_sql_salted_hash_and_the_python_one_agree():
    import duckdb

    from consent import sql
    from consent.privacy import phone_hash

    con = duckdb.connect()
    sql.use_salt(con, "pepper")
    assert con.execute("SELECT salted_hash('+4915112345678')").fetchone()[0] == phone_hash("+4915112345678", "pepper")
    sql.use_salt(con, None)  # a reader without a salt gets no hash rather than an unsalted one
    assert con.execute("SELECT salted_hash('+4915112345678')").fetchone()[0] is None


def test_the_salted_hash_expression_is_written_once():
    hits = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*.sql") if ".venv" not in p.parts
            and "sha256(" in p.read_text()]
    assert hits == ["consent/sql/macros.sql"]


def test_every_registered_rule_is_judged_somewhere_and_every_judged_rule_is_registered():
    from consent.reconcile import ConsentStateMachine
    from consent.rules import RULES

    source = inspect.getsource(ConsentStateMachine)
    for rule in RULES.values():
        if rule.assessed:
            assert hasattr(ConsentStateMachine, f"_breaks_{rule.name}"), rule.name
        else:
            assert f'"{rule.name}"' in source, f"{rule.name} is registered but no handler raises it"
    judged = {name[len("_breaks_"):] for name in dir(ConsentStateMachine) if name.startswith("_breaks_")}
    assert judged <= set(RULES)


def test_policy_severities_come_from_the_registry_and_unknown_rules_are_refused(tmp_path):
    from consent.policy import ConfigError, Policy, load_policy
    from consent.rules import RULES

    assert Policy().rule_severity == {name: rule.severity for name, rule in RULES.items()}
    assert Policy(rule_severity={"future_date": "error"}).severity("future_date") == "error"
    assert Policy(rule_severity={"future_date": "error"}).severity("missing_consent_date") == "error"
    path = tmp_path / "policy.yaml"
    path.write_text("rule_severity:\n  pre_ticked_checkbx: error\n")
    with pytest.raises(ConfigError, match="unknown rule 'pre_ticked_checkbx'"):
        load_policy(path)


def test_a_holiday_calendar_must_be_one_the_holidays_package_knows(tmp_path):
    from consent.policy import ConfigError, load_policy

    path = tmp_path / "policy.yaml"
    for known in ("US", "DE", "US"):  # the second US is answered by the list kept from the first
        path.write_text(f"holiday_calendar: {known}\n")
        assert load_policy(path).holiday_calendar == known
    path.write_text("holiday_calendar: XQ\n")
    with pytest.raises(ConfigError, match="unknown holiday calendar 'XQ'"):
        load_policy(path)


def test_an_unknown_rule_in_the_policy_exits_2(exports, warehouse_path, capsys):
    from tests.conftest import run_cli

    (exports / "policy.yaml").write_text("rule_severity:\n  notice_unkown: error\n")
    assert run_cli(exports, warehouse_path) == 2
    assert "unknown rule 'notice_unkown'" in capsys.readouterr().err


def test_a_time_dependent_rule_brings_its_contacts_back_every_night(exports, warehouse_path):
    """future_date is registered as time-dependent: once its date has passed, the opt-in counts."""
    from tests.conftest import query, run_cli, statuses

    (exports / "in_app").mkdir()
    (exports / "in_app" / "early.csv").write_text(
        "phone,event_type,purposes,occurred_at,consent_method,notice_version\n"
        "+4915201234570,opt_in,marketing,2026-11-20T10:00:00Z,in_app_prompt,app-v1\n"
    )
    assert run_cli(exports, warehouse_path) == 0
    assert statuses(warehouse_path)[("+4915201234570", "marketing")] == "no_consent"
    # Before its date nothing can change: a night on the same clock decides nobody again.
    assert run_cli(exports, warehouse_path) == 0
    assert query(warehouse_path, "SELECT contacts_reconciled FROM runs ORDER BY started_at DESC LIMIT 1") == [(0,)]
    assert run_cli(exports, warehouse_path, as_of="2026-11-21T00:00:00Z") == 0
    assert statuses(warehouse_path)[("+4915201234570", "marketing")] == "opted_in"


def test_sql_statements_end_at_a_semicolon_ending_a_line_of_code_not_of_comment():
    from consent import sql

    text = ("-- a; b;\nSELECT 1 AS a; -- the first\n-- ends with a semicolon;\nSELECT 2\n  AS b;\n\n"
            "-- only a comment;\n")
    assert sql.split(text) == ("-- a; b;\nSELECT 1 AS a", "-- ends with a semicolon;\nSELECT 2\n  AS b")
