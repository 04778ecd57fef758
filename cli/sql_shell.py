"""`consent sql` without a query: DuckDB's own shell on the read copy, read-only.

The shell is the DuckDB CLI of the `duckdb-cli` package, pinned to the same
DuckDB as the warehouse. It opens an in-memory database and attaches the read
copy READ_ONLY as `warehouse` (the catalog `consent sql` uses), encrypted or
not: the key goes to the shell through its environment, never on its command
line, and the variable holding it is dropped once attached. Then file access
is switched off, the settings are locked and the shell's safe mode is on (no
`.shell`, `.output`, `.read`, `.open`): it can read the warehouse and nothing
else, like `consent sql`, and never holds the file a run writes.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import stat
import subprocess
from pathlib import Path

import duckdb

from consent.storage.sql import FOLDER as SQL_FOLDER
from consent.storage.access import WarehouseAccess, _extension_directory, _sql_text

KEY_VARIABLE = "CONSENT_WAREHOUSE_KEY"


class ShellUnavailable(Exception):
    """The shell cannot start here (one line for the user)."""


def duckdb_cli() -> Path:
    """The DuckDB CLI binary of the `duckdb-cli` package, made executable (its wheel's mode bits may
    be lost when installed); refused when its DuckDB is not the warehouse's."""
    try:
        dist = importlib.metadata.distribution("duckdb-cli")
    except importlib.metadata.PackageNotFoundError:
        raise ShellUnavailable("the DuckDB CLI is not installed (pip install duckdb-cli==" + duckdb.__version__ + ")") from None
    if dist.version != duckdb.__version__:
        raise ShellUnavailable(f"the DuckDB CLI is version {dist.version}, the warehouse's DuckDB {duckdb.__version__}: "
                               f"pip install duckdb-cli=={duckdb.__version__}")
    found = [Path(dist.locate_file(f)).resolve() for f in dist.files or () if f.name == "duckdb" and f.parent.name == "bin"]
    if not found or not found[0].is_file():
        raise ShellUnavailable("the DuckDB CLI package has no binary here")
    binary = found[0]
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def shell_commands(warehouse: WarehouseAccess, copy: Path) -> list[str]:
    """What the shell runs before its first prompt: attach the copy read-only, then close every door."""
    commands = ["SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false",
                "SET TimeZone = 'UTC'", f"SET memory_limit = {_sql_text(str(warehouse.setting('memory_limit')))}",
                f"SET temp_directory = {_sql_text(warehouse.setting('temp_directory') or str(Path(warehouse.file).resolve().parent / '.duckdb_tmp'))}"]
    attach = f"ATTACH {_sql_text(str(copy))} AS warehouse (READ_ONLY)"
    if warehouse.key:
        extensions = _extension_directory()
        if extensions:
            commands.append(f"SET extension_directory = {_sql_text(extensions)}")
        commands += ["LOAD httpfs", "SET temp_file_encryption = true",
                     f"SET VARIABLE consent_key = getenv('{KEY_VARIABLE}')"]
        attach = (f"ATTACH {_sql_text(str(copy))} AS warehouse (READ_ONLY, ENCRYPTION_KEY getvariable('consent_key'))"
                  "; RESET VARIABLE consent_key")
    commands += [attach, "USE warehouse",
                 f".read {SQL_FOLDER / 'send_macros.sql'}",  # the table macros the audits use
                 "SET enable_external_access = false", "SET lock_configuration = true", ".safe_mode"]
    return commands


def open_shell(warehouse: WarehouseAccess) -> int:
    """Run the DuckDB shell on the read copy until the user leaves it (or stdin ends); its exit code."""
    binary = duckdb_cli()
    copy = warehouse.readable_file()
    if copy != warehouse.read_copy:
        raise ShellUnavailable("no read copy of the warehouse yet (its first run is still writing): "
                               "try again when the run ends, or give a query")
    with warehouse.connect(read_only=True, file=copy):
        pass  # a wrong key or a warehouse that needs migrating: one line here, not inside the shell
    arguments = [str(binary), ":memory:"]
    for command in shell_commands(warehouse, copy):
        arguments += ["-cmd", command]
    env = {**os.environ}
    if warehouse.key:
        env[KEY_VARIABLE] = warehouse.key
    shell = subprocess.Popen(arguments, env=env)
    # Ctrl-C belongs to the shell (it cancels the running query), not to this process.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return shell.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
