"""`consent rules`: the rule registry, as the code applies it."""

from __future__ import annotations

from cli.common import EXIT_OK, _table, add_command


def register(sub) -> None:
    add_command(sub, "rules", command_rules,
                "list the consent rules (the registry): severity, refuses consent, time-dependent", "consent rules")


def command_rules(args) -> int:
    from consent.domain.rules import RULES

    rows = [("rule", "default severity", "refuses consent", "time-dependent", "what it means")]
    for rule in RULES.values():
        refuses = "policy" if rule.refuses is None else ("yes" if rule.refuses else "no")
        timed = ("once its date is reached" if rule.until_dated else "yes") if rule.time_dependent else "no"
        rows.append((rule.name, rule.severity, refuses, timed, rule.description))
    print(_table(rows))
    return EXIT_OK

