"""The `consent` command line: the top-level parser, `--version`, and every command group's subcommands."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from cli.commands import GROUPS
from cli.common import DATA_PATH_HELP, UsageError

DISTRIBUTION = "whatsapp-consent-warehouse"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no traceback
        raise UsageError(message)


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def version_line() -> str:
    """This package's version and the engines it runs on, as a bug report wants them."""
    python = ".".join(str(part) for part in sys.version_info[:3])
    return (f"consent {_installed(DISTRIBUTION)} (DuckDB {_installed('duckdb')}, Dagster {_installed('dagster')}, "
            f"Python {python})")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="consent", description="WhatsApp consent warehouse: who may be messaged, for what, and the proof.",
        epilog="`consent COMMAND --help` shows a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    for command in sub.choices.values():  # wherever a warehouse is named, a DuckLake one may be
        if any("--warehouse" in action.option_strings for action in command._actions):
            command.add_argument("--data-path", dest="data_path", help=DATA_PATH_HELP)
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by name, in the order `consent --help` lists them."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)
