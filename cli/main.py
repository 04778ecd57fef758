"""`consent`: run the nightly job in-process and read the warehouse.

Exit codes: 0 success; 1 the run failed or an ERROR-severity check failed
(opt-outs are published all the same); 2 usage or configuration error;
3 `consent check`: some audience rows may not be messaged.

This module is the entry point: it parses the command line (cli/parser.py), runs the command
(cli/commands/) and turns every user error into one line on standard error, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from cli.common import EXIT_FAILED, EXIT_USAGE, UsageError, _resources, duckdb_message, read_only_query
from cli.parser import _parser
from consent.domain.policy import ConfigError
from consent.storage.access import WarehouseKeyError, WarehouseLocked, owner_only, owner_only_file
from consent.storage.migrations import WarehouseOutdated

# Used by tests and benchmarks that build a command's resources or query the read copy directly.
__all__ = ["main", "_parser", "_resources", "read_only_query"]

# Commands that write numbers to files (`--out`, access reports): created readable by their owner only.
WRITES_NUMBERS = ("export", "check", "access")


def _owner_only_command(handler, args) -> int:
    if args.command not in WRITES_NUMBERS:
        return handler(args)
    out = getattr(args, "out", None)
    if out:
        _require_writable(Path(out), folder_made=args.command == "access")
    try:
        with owner_only():
            code = handler(args)
    except OSError as exc:
        if out and exc.filename and Path(exc.filename) == Path(out):
            raise UsageError(f"cannot write --out {out}: {exc.strerror}") from None
        raise
    if out and Path(out).is_file():
        owner_only_file(Path(out))  # a file that existed before keeps its inode and its mode: close it too
    return code


def _require_writable(out: Path, folder_made: bool) -> None:
    """An --out that cannot be written stops the command before it reads the warehouse or logs a check."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name")
    if not folder_made and not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return _owner_only_command(args.handler, args)
    except (UsageError, ConfigError, WarehouseKeyError, WarehouseOutdated) as exc:
        print(f"consent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WarehouseLocked as exc:
        print(f"consent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except duckdb.CatalogException as exc:
        # The schema version checks passed, so the file holds no consent tables at all.
        print(f"consent: the warehouse holds no consent tables ({duckdb_message(exc)}); "
              "is it a consent warehouse? `consent run` creates one", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
