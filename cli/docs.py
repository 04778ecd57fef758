"""The command reference of docs/cli.md, written from the parser itself, so it cannot drift.

`python -m cli.docs --write` rewrites the part of docs/cli.md between the two markers;
tests/test_cli.py fails when that part differs from what the parser says.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.parser import _parser, subcommands

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BEGIN = "<!-- commands: generated from the parser by `python -m cli.docs --write`; do not edit by hand -->"
END = "<!-- end of generated commands -->"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _flag(action: argparse.Action) -> str:
    """`--purpose PURPOSE`, `--format {csv,json}`, `NUMBER`, `[ARGS ...]` as a user types them."""
    if not action.option_strings:
        name = (action.metavar or action.dest).upper()
        return {"?": f"[{name}]", "*": f"[{name} ...]"}.get(action.nargs, name)
    flag = ", ".join(action.option_strings)
    if action.nargs == 0:
        return flag
    value = "{" + ",".join(action.choices) + "}" if action.choices else (action.metavar or action.dest.upper())
    return f"{flag} {value}"


def _options(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | meaning |", "|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        meaning = action.help or ""
        if action.required and action.option_strings:
            meaning += " (required)"
        if action.default not in (None, False) and action.default != argparse.SUPPRESS:
            meaning += f" (default: {action.default})"
        rows.append(f"| `{_flag(action)}` | {_cell(meaning.strip())} |")
    return rows


def _command(name: str, parser: argparse.ArgumentParser) -> list[str]:
    examples = parser.get_default("examples")
    lines = [f"### `consent {name}`", "", parser.description, "", "```sh", *examples, "```", ""]
    if len(parser._actions) > 1:
        lines += [*_options(parser), ""]
    return lines


def render() -> str:
    """The generated part of docs/cli.md: an index, then every command with its examples and arguments."""
    commands = subcommands(_parser())
    lines = ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#consent-{name}) | {_cell(p.description)} |" for name, p in commands.items()]
    lines.append("")
    for name, parser in commands.items():
        lines += _command(name, parser)
    return "\n".join(lines).strip("\n")


def generated_part(text: str) -> str:
    """What docs/cli.md holds between the markers."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write(path: Path = DOC) -> None:
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(render())
