"""One module per command group; each `register(sub)` adds its subcommands with their flags,
description and examples, and names the function that runs them."""

from cli.commands import audit, check, export, maintain, migrate, privacy, rules, run, runs, sql

# In the order `consent --help` lists them: the nightly run first, then reading, sending, privacy, upkeep.
GROUPS = (run, sql, audit, export, check, privacy, runs, migrate, maintain, rules)
