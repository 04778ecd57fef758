"""The one door to the DuckDB warehouse and the run's settings, without Dagster.

Every DuckDB connection the project opens (assets, checks, CLI, audits) comes
from `WarehouseAccess.connect`, so locking, read-only access, encryption, the
schema version and the hash salt are decided here once. The Dagster resources
(`pipelines/resources.py`) are these classes with Dagster's configuration on
top; the CLI's read commands (`sql`, `audit`, `export`, `runs`, `access`) use
the plain `Warehouse` and `Settings` below and never import Dagster or Great
Expectations (start-up).

Every setting is read from the same environment variables (`SETTINGS`) with
the same defaults, whichever door a run or a command came in by.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import duckdb

from consent.migrations import ensure_schema, require_current
from consent.policy import ChannelsFile, ConfigError, Policy, load_channels, load_policy
from consent.sql import use_salt

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXPORTS = str(REPO_ROOT / "sample_exports")
DEFAULT_WAREHOUSE = "warehouse/consent.duckdb"
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
# DuckDB's memory per connection: what does not fit spills to the temp directory, so DuckDB's share
# of a run's memory does not grow with its events (README, "Performance"). DuckDB's own default is
# 80% of RAM. 1GB since issue 16's fifteenth part: ten million events run under it (a full run and
# its nights), and the 5M run's peak is 1.21x the 1M run's (2GB: 1.71x).
DEFAULT_MEMORY_LIMIT = "1GB"


class WarehouseLocked(Exception):
    """Another process holds the warehouse's write lock for longer than the timeout."""


class WarehouseKeyError(Exception):
    """The warehouse is encrypted and no key, or the wrong key, was given."""


class RunLock:
    """An exclusive lock on `<warehouse>.runlock` held for a whole run (fcntl, released if the process dies)."""

    def __init__(self, warehouse: Path, timeout_seconds: float):
        self.path = warehouse.with_name(warehouse.name + ".runlock")
        self.timeout = timeout_seconds
        self.handle = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.handle = handle
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise WarehouseLocked(
                        f"another run is writing the warehouse {self.path.with_suffix('')}; "
                        f"waited {self.timeout:g} s (see --lock-timeout)"
                    ) from None
                time.sleep(0.2)

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def _extension_directory() -> str | None:
    """The DuckDB extensions shipped by the `duckdb-ext-*` registry packages; nothing downloads."""
    try:
        import duckdb_ext
    except ImportError:
        return None
    return str(Path(next(iter(duckdb_ext.__path__))) / "extensions")


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class FromEnvironment:
    """Fields left unset (None) take the environment variable of `SETTINGS`, else the default.

    Read when used, in the process that uses them: a run launched from the UI with some
    fields set in the launchpad still takes the others (the hash salt, the key) from the
    environment, as `consent` and the schedule do.
    """

    def setting(self, field: str):
        value = getattr(self, field)
        if value is not None:
            return value
        for setting in SETTINGS:
            if setting.field == field and os.environ.get(setting.variable):
                return setting.read()
        return DEFAULTS.get(field)


class WarehouseAccess(FromEnvironment):
    """The DuckDB consent warehouse file, encrypted (AES-GCM) when a key is given.

    Unset fields come from the environment (CONSENT_WAREHOUSE, CONSENT_WAREHOUSE_KEY,
    CONSENT_HASH_SALT, CONSENT_ALERT_COMMAND, CONSENT_LOCK_TIMEOUT_SECONDS,
    CONSENT_MEMORY_LIMIT, CONSENT_TEMP_DIRECTORY). The fields are declared by `Warehouse`
    and by the Dagster `WarehouseResource`."""

    @property
    def file(self) -> str:
        return self.setting("path")

    @property
    def lock_timeout(self) -> float:
        return float(self.setting("lock_timeout_seconds"))

    @property
    def key(self) -> str | None:
        return self.setting("encryption_key")

    @property
    def alert(self) -> str | None:
        return self.setting("alert_command")

    @property
    def encrypted(self) -> bool:
        return bool(self.key)

    def salt(self, create: bool = True) -> str | None:
        """The hash salt: configured, or kept beside the warehouse (created on first use unless `create` is False)."""
        configured = self.setting("hash_salt")
        if configured:
            return configured
        path = Path(self.file).resolve().parent / ".hash_salt"
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                    handle.write(secrets.token_hex(32))
            except FileExistsError:
                pass
        return path.read_text().strip() if path.exists() else None

    def compact(self) -> None:
        """Rewrite the database into a fresh file, so deleted rows leave no bytes behind."""
        path = Path(self.file)
        fresh = path.with_name(path.name + ".compacting")
        fresh.unlink(missing_ok=True)
        with self.connect() as con:
            options = f" (ENCRYPTION_KEY {_sql_text(self.key)})" if self.key else ""
            con.execute(f"ATTACH {_sql_text(str(fresh))} AS fresh{options}")
            con.execute("COPY FROM DATABASE warehouse TO fresh")
            con.execute("DETACH fresh")
        os.replace(fresh, path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the warehouse attached as the default catalog.

        Waits up to `lock_timeout_seconds` while another process writes.
        """
        path = Path(self.file)
        if read_only and not path.exists():
            raise FileNotFoundError(f"no warehouse at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        extensions = _extension_directory()
        if extensions:
            config["extension_directory"] = extensions
        con = duckdb.connect(":memory:", config=config)
        try:
            con.execute("SET TimeZone = 'UTC'")
            # A run shows its own progress on stderr; DuckDB's bar (queries over 2 s) would print on stdout.
            con.execute("SET enable_progress_bar = false")
            limit = str(self.setting("memory_limit"))
            try:
                con.execute("SET memory_limit = ?", [limit])
            except duckdb.Error as exc:
                raise ConfigError(
                    f"CONSENT_MEMORY_LIMIT (warehouse memory_limit): {limit!r} is not a memory size such as 2GB or 512MB"
                ) from exc
            if not read_only:
                spill = self.setting("temp_directory") or str(path.resolve().parent / ".duckdb_tmp")
                con.execute("SET temp_directory = ?", [spill])
            options = ["READ_ONLY"] if read_only else []
            if self.key:
                # DuckDB 1.4 writes encrypted files only with httpfs's crypto module loaded.
                con.execute("LOAD httpfs")
                options.append(f"ENCRYPTION_KEY {_sql_text(self.key)}")
            attach = f"ATTACH {_sql_text(str(path))} AS warehouse" + (f" ({', '.join(options)})" if options else "")
            self._attach(con, attach, path)
            con.execute("USE warehouse")
            if read_only:
                require_current(con)
            else:
                ensure_schema(con)
            # A reader never creates a salt: without one, salted_hash() gives NULL.
            use_salt(con, self.salt(create=not read_only))
            yield con
        finally:
            con.close()

    def _attach(self, con: duckdb.DuckDBPyConnection, attach: str, path: Path) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                con.execute(attach)
                return
            except duckdb.Error as exc:
                message = str(exc)
                lowered = message.lower()
                if "encrypt" in lowered or "key" in lowered and "wrong" in lowered:
                    hint = "set CONSENT_WAREHOUSE_KEY" if not self.key else "check CONSENT_WAREHOUSE_KEY"
                    raise WarehouseKeyError(f"cannot open the warehouse {path}: it is encrypted ({hint})") from exc
                if "lock" not in lowered:
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(
                        f"the warehouse {path} is locked by another run; waited {self.lock_timeout:g} s"
                    ) from exc
                time.sleep(0.2)


class SettingsAccess(FromEnvironment):
    """Where the exports are, which policy applies, and the run's clock.

    Unset fields come from the environment (CONSENT_EXPORTS, CONSENT_POLICY, CONSENT_WORKERS,
    CONSENT_AUDIENCES). The fields are declared by `Settings` and by the Dagster `ConsentSettings`."""

    @property
    def exports_path(self) -> Path:
        return Path(self.setting("exports_dir"))

    @property
    def audiences_path(self) -> Path:
        given = self.setting("audiences_dir")
        return Path(given) if given else self.exports_path.resolve().parent / "audiences"

    @property
    def policy_path(self) -> Path:
        given = self.setting("policy_file")
        return Path(given) if given else self.exports_path / "policy.yaml"

    @property
    def worker_count(self) -> int:
        return int(self.setting("workers"))

    def load_policy(self) -> Policy:
        return load_policy(self.policy_path)

    def load_channels(self) -> ChannelsFile:
        return load_channels(self.exports_path)

    def run_clock(self) -> datetime:
        """`as_of` as naive UTC, or now."""
        return parse_as_of(self.as_of)


def parse_as_of(value: str | None) -> datetime:
    if not value:
        return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


@dataclass(frozen=True)
class Setting:
    field: str  # the resource field it fills when unset
    variable: str  # environment variable
    cast: Callable[[str], object] = str
    kind: str = ""  # what a valid value is, for the error (default: the cast's name)

    def read(self):
        try:
            return self.cast(os.environ[self.variable])
        except ValueError as exc:
            what = self.kind or self.cast.__name__
            raise ConfigError(f"{self.variable}: not a {what}: {os.environ[self.variable]!r}") from exc


_MEMORY_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*", re.IGNORECASE)


def memory_size(text: str) -> str:
    """A DuckDB memory size ("2GB", "512MB", "3GiB"), checked before any connection is made."""
    if not _MEMORY_SIZE.fullmatch(text):
        raise ValueError(text)
    return text.strip()


# Every setting any entry point reads from the environment, and the defaults when it is unset.
SETTINGS = (
    Setting("path", "CONSENT_WAREHOUSE"),
    Setting("encryption_key", "CONSENT_WAREHOUSE_KEY"),
    Setting("hash_salt", "CONSENT_HASH_SALT"),
    Setting("alert_command", "CONSENT_ALERT_COMMAND"),
    Setting("lock_timeout_seconds", "CONSENT_LOCK_TIMEOUT_SECONDS", float),
    Setting("memory_limit", "CONSENT_MEMORY_LIMIT", memory_size, "memory size such as 2GB or 512MB"),
    Setting("temp_directory", "CONSENT_TEMP_DIRECTORY"),
    Setting("exports_dir", "CONSENT_EXPORTS"),
    Setting("policy_file", "CONSENT_POLICY"),
    Setting("workers", "CONSENT_WORKERS", int),
    Setting("audiences_dir", "CONSENT_AUDIENCES"),
)
DEFAULTS = {"path": DEFAULT_WAREHOUSE, "lock_timeout_seconds": 30.0, "exports_dir": DEFAULT_EXPORTS, "workers": DEFAULT_WORKERS,
            "memory_limit": DEFAULT_MEMORY_LIMIT}


@dataclass
class Warehouse(WarehouseAccess):
    """The warehouse for a command that needs no Dagster (every field: None = from the environment)."""

    path: Optional[str] = None
    lock_timeout_seconds: Optional[float] = None
    memory_limit: Optional[str] = None
    temp_directory: Optional[str] = None
    encryption_key: Optional[str] = field(default=None, repr=False)
    hash_salt: Optional[str] = field(default=None, repr=False)
    alert_command: Optional[str] = None


@dataclass
class Settings(SettingsAccess):
    """The settings for a command that needs no Dagster."""

    exports_dir: Optional[str] = None
    policy_file: Optional[str] = None
    as_of: Optional[str] = None
    full: bool = False
    reread: bool = False
    workers: Optional[int] = None
    audiences_dir: Optional[str] = None


def access_from_env(overrides: dict[str, dict] | None = None) -> dict:
    """`warehouse` and `settings` without Dagster: the fields given in `overrides` (None: not
    given) are set, every other one is read from the environment when used."""
    given = {name: {k: v for k, v in fields.items() if v is not None} for name, fields in (overrides or {}).items()}
    return {"warehouse": Warehouse(**given.get("warehouse", {})), "settings": Settings(**given.get("settings", {}))}
