"""The one door to the DuckDB warehouse and the run's settings, without Dagster.

Every DuckDB connection the project opens (assets, checks, CLI, audits) comes
from `WarehouseAccess.connect`, so locking, read-only access, encryption, the
schema version and the hash salt are decided here once. The Dagster resources
(`resources/warehouse.py`) are these classes with Dagster's configuration on
top; the CLI's read commands (`sql`, `audit`, `export`, `runs`, `access`) use
the plain `Warehouse` and `Settings` below and never import Dagster or Great
Expectations (start-up).

Every setting is read from the same environment variables (`SETTINGS`) with
the same defaults, whichever door a run or a command came in by.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import secrets
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import duckdb

from consent.storage.migrations import ensure_schema, require_current
from consent.domain.policy import ChannelsFile, ConfigError, Policy, load_channels, load_policy
from consent.storage.sql import use_reader_macros, use_salt
from consent.storage.ducklake import (
    Lake,
    allow_only_lake_files,
    encrypted,
    forget_deleted_rows,
    is_lake,
    masked,
    prepare,
    s3_secret_sql,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXPORTS = str(REPO_ROOT / "sample_exports")
DEFAULT_WAREHOUSE = "warehouse/consent.duckdb"
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
# DuckDB's memory per connection: what does not fit spills to the temp directory, so DuckDB's share
# of a run's memory does not grow with its events (docs/performance.md). DuckDB's own default is
# 80% of RAM. At 1GB ten million events run under it (a full run and its nights), and the 5M run's
# peak is 1.21x the 1M run's (2GB: 1.71x).
DEFAULT_MEMORY_LIMIT = "1GB"
# How long a DuckLake warehouse keeps its snapshots: an auditor can open it as it stood at any moment
# within this many days (docs/ducklake.md). A policy decision: set CONSENT_SNAPSHOT_RETENTION_DAYS.
DEFAULT_SNAPSHOT_RETENTION_DAYS = 30


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


class NoRunLock:
    """A DuckLake warehouse takes no file lock: several processes and machines write one catalog,
    each transaction committed (or retried) by DuckLake itself."""

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


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
    CONSENT_MEMORY_LIMIT, CONSENT_TEMP_DIRECTORY, CONSENT_SNAPSHOT_RETENTION_DAYS). The fields are
    declared by `Warehouse` and by the Dagster `WarehouseResource`."""

    @property
    def location(self) -> str:
        """The warehouse as configured: a DuckDB file, or `ducklake:<catalog>`."""
        return self.setting("path")

    @property
    def lake(self) -> Lake | None:
        """The DuckLake catalog and data path, for a DuckLake warehouse; None for a file."""
        return Lake(self.location, self.setting("data_path")) if is_lake(self.location) else None

    @property
    def file(self) -> str:
        """The warehouse file; for a DuckLake warehouse, the local path whose folder keeps what a
        warehouse keeps beside it (`Lake.anchor`)."""
        lake = self.lake
        return str(lake.anchor) if lake else self.location

    def describe(self) -> str:
        """The warehouse for messages (a catalog's password hidden)."""
        lake = self.lake
        return lake.describe() if lake else self.location

    def exists(self) -> bool:
        lake = self.lake
        return lake.exists() if lake else Path(self.location).exists()

    def run_lock(self) -> RunLock | NoRunLock:
        """The lock a writing command holds: the file's run lock; none on DuckLake."""
        return NoRunLock() if self.lake else RunLock(Path(self.file), self.lock_timeout)

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

    @property
    def retention_days(self) -> int:
        """How long a DuckLake warehouse keeps its snapshots (and so how far back it can be opened as it
        stood): older ones are expired by the maintenance (`consent.storage.maintenance`)."""
        return int(self.setting("snapshot_retention_days"))

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
        if not path.exists():
            return None
        owner_only_file(path)  # a salt file left readable by others (older code, a copy) is closed first
        return path.read_text().strip()

    def lake_data_files(self) -> set[Path]:
        """The files under a DuckLake warehouse's local data folder, as its catalog names it (the
        erasure's scrub of files beside the warehouse leaves them to the catalog); none for a file."""
        if not self.lake:
            return set()
        with self.connect(read_only=True) as con:
            row = con.execute(
                "SELECT value FROM __ducklake_metadata_warehouse.ducklake_metadata WHERE key = 'data_path'").fetchone()
        folder = Path(row[0]) if row and row[0] and "://" not in row[0] else None
        return {p for p in folder.rglob("*") if p.is_file()} if folder and folder.is_dir() else set()

    def carry_salt_to(self, target: "WarehouseAccess") -> None:
        """Before a warehouse is copied into `target` (`consent migrate --to`): the hashes it holds
        were made with its salt, so a salt kept beside it is kept beside the target too."""
        if self.setting("hash_salt"):
            return  # configured (CONSENT_HASH_SALT): the same for both
        salt = self.salt(create=False)
        if not salt:
            return
        kept = Path(target.file).resolve().parent / ".hash_salt"
        if kept.exists():
            if kept.read_text().strip() != salt:
                raise ConfigError(f"{kept} holds another hash salt than the warehouse's: move it away, "
                                  "or set CONSENT_HASH_SALT")
            return
        kept.parent.mkdir(parents=True, exist_ok=True)
        with owner_only():
            kept.write_text(salt)

    def hash_identifier(self, value: str) -> str | None:
        """The salted hash of one number or BSUID, as the marts and the suppression list hold it,
        computed by `salted_hash` on a connection of its own (no warehouse opened, no salt
        created: None when there is none yet)."""
        salt = self.salt(create=False)
        if not salt:
            return None
        con = duckdb.connect(":memory:")
        try:
            use_salt(con, salt)
            return con.execute("SELECT salted_hash(?)", [value]).fetchone()[0]
        finally:
            con.close()

    def compact(self) -> None:
        """Rewrite the database into a fresh file, so deleted rows leave no bytes behind."""
        if self.lake:
            return self._compact_lake()
        path = Path(self.file)
        fresh = path.with_name(path.name + ".compacting")
        fresh.unlink(missing_ok=True)
        with self.connect() as con:
            options = f" (ENCRYPTION_KEY {_sql_text(self.key)})" if self.key else ""
            con.execute(f"ATTACH {_sql_text(str(fresh))} AS fresh{options}")
            con.execute("COPY FROM DATABASE warehouse TO fresh")
            con.execute("DETACH fresh")
        self.close_held_writer()  # no instance of this process may hold the file it replaces
        os.replace(fresh, path)

    @contextmanager
    def connect(self, read_only: bool = False, *, hashing: bool = False, file: str | Path | None = None,
                snapshot_time: datetime | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the warehouse attached as the default catalog.

        Waits up to `lock_timeout_seconds` while another process writes. A read-only
        connection (`file`: the warehouse or its read copy) never sees the salt: it has
        `salted_hash()` only with `hashing` (canned audits), as a Python function.
        Every file DuckDB creates meanwhile (the warehouse, its WAL, spill files) is
        readable by its owner only. `snapshot_time` (a DuckLake reader only): the catalog as it
        stood at that moment (naive UTC), its snapshot then.
        """
        lake = self.lake
        path = Path(file or self.file)
        if read_only and not (lake.exists() if lake else path.exists()):
            raise FileNotFoundError(f"no warehouse at {self.describe() if lake else path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if lake and lake.kind == "postgres" and not read_only and snapshot_time is None:
            with owner_only(), self._lake_writer_session(lake, path) as con:
                yield con
            return
        if not lake and not read_only and _held_key(path) in _held_files:
            with owner_only(), self._held_writer_session(path) as con:
                yield con
            return
        with owner_only():
            con = self._connection(path)
            try:
                if lake:
                    self._attach_lake(con, lake, read_only, snapshot_time)
                else:
                    self._attach(con, self._attach_sql(path, "warehouse", read_only), path)
                con.execute("USE warehouse")
                if read_only:
                    require_current(con, older_ok=snapshot_time is not None)
                    # A reader never creates a salt, and never holds it in a variable or macro.
                    use_reader_macros(con, self.salt(create=False) if hashing else None, hashing)
                else:
                    for written in (() if lake else (path, path.with_name(path.name + ".wal"))):
                        owner_only_file(written)  # files older code left readable by others
                    ensure_schema(con)
                    use_salt(con, self.salt())
                yield con
            finally:
                con.close()

    def hold_writer(self) -> None:
        """From now until `release_writer`, this process's writer connections to the warehouse
        file are sessions (cursors) of one DuckDB instance, opened at the first of them, instead of
        an instance each: a run holds it from its first step to its last (WarehouseResource, under
        the run lock). Opening an instance attaches the file (0.03 s at 1M events, 0.06 s at 5M)
        and closing it checkpoints: a run opened 30-60 of them. Nothing on DuckLake (a PostgreSQL
        catalog's writer is shared already)."""
        if self.lake:
            return
        with _held_guard:
            _held_files.setdefault(_held_key(Path(self.file)), None)

    def release_writer(self) -> None:
        """Close the held instance (checkpointing the file) and connect as before."""
        if self.lake:
            return
        key = _held_key(Path(self.file))
        with _held_guard:
            _close_held(key)
            _held_files.pop(key, None)

    def close_held_writer(self) -> None:
        """Close the held instance, if open, keeping the hold (the next writer connection opens
        another): before the file is copied or replaced."""
        _close_held(_held_key(Path(self.file)))

    @contextmanager
    def _held_writer_session(self, path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writer's session of the held instance (`hold_writer`), with its own temp tables,
        macros, variables and default catalog, as a new connection has. A block that raises
        closes the instance: a failed statement may have invalidated it."""
        key = _held_key(path)
        with _held_guard:
            instance = _held_files.get(key)
            if instance is None:
                instance = self._connection(path)
                try:
                    self._attach(instance, self._attach_sql(path, "warehouse", read_only=False), path)
                    for written in (path, path.with_name(path.name + ".wal")):
                        owner_only_file(written)  # files older code left readable by others
                except BaseException:
                    instance.close()
                    raise
                _held_files[key] = instance
        with self._session(instance, lambda: _close_held(key)) as con:
            yield con

    @contextmanager
    def _session(self, instance: duckdb.DuckDBPyConnection,
                 drop: Callable[[], None]) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writer's session (cursor) of a shared instance, with its own temp tables, macros,
        variables and default catalog, as a new connection has. A block that raises calls `drop`
        (the instance is closed: a failed statement may have invalidated it)."""
        con = instance.cursor()
        try:
            con.execute("SET TimeZone = 'UTC'")  # a session's settings are its own
            con.execute("SET enable_progress_bar = false")
            con.execute("USE warehouse")
            ensure_schema(con)
            use_salt(con, self.salt())
            yield con
        except BaseException:
            con.close()
            drop()
            raise
        con.close()

    @contextmanager
    def _lake_writer_session(self, lake: Lake, path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writer's connection to a PostgreSQL catalog: a session (cursor) of the process's shared
        instance (`_shared_lake_writer`), with its own temp tables, macros, variables and default
        catalog, as a new connection has. A block that raises drops the instance: a failed statement
        may have invalidated it, and the next connection then opens afresh."""
        with self._session(_shared_lake_writer(self, lake, path), _drop_lake_writer) as con:
            yield con

    def _attach_lake(self, con: duckdb.DuckDBPyConnection, lake: Lake, read_only: bool,
                     snapshot_time: datetime | None = None) -> None:
        """The DuckLake catalog attached as `warehouse`; a key given for a catalog created without
        encryption is refused (its data files would stay in plaintext)."""
        prepare(con, lake)
        try:
            attach = lake.attach_sql("warehouse", read_only=read_only, key=self.key, snapshot_time=snapshot_time)
            self._attach(con, attach, Path(lake.describe()))
        except duckdb.Error as exc:
            # a catalog that cannot be reached, a new one without --data-path, one whose data path
            # is another than the given one: one line (a password in the connection string hidden)
            message = masked(" ".join(str(exc).split()))
            if "data_path" in message.lower() or "data path" in message.lower():
                message += " (see --data-path / CONSENT_DATA_PATH)"
            if "no snapshot found" in message.lower():
                message += " (before its first snapshot, or expired: see CONSENT_SNAPSHOT_RETENTION_DAYS)"
            raise ConfigError(f"cannot attach the warehouse {lake.describe()}: {message}") from None
        if self.key and not encrypted(con):
            raise WarehouseKeyError(f"cannot open the warehouse {lake.describe()}: its catalog was created without "
                                    "encryption, but a key was given (unset CONSENT_WAREHOUSE_KEY to open it)")

    def allow_only_its_files(self, con: duckdb.DuckDBPyConnection) -> None:
        """What a reader locked down (`enable_external_access = false`) may still read: on
        DuckLake its data files; a file warehouse is attached already and needs nothing."""
        if self.lake:
            allow_only_lake_files(con, self.lake)

    def _compact_lake(self) -> None:
        """Deleted rows of a DuckLake leave no bytes behind in its data files and catalog tables
        (`forget_deleted_rows`); a DuckDB-file catalog is then rewritten into a fresh file, as a
        file warehouse is. A PostgreSQL or SQLite catalog keeps dead rows until its own VACUUM."""
        with self.connect() as con:
            forget_deleted_rows(con)
        catalog = self.lake.catalog_file
        if self.lake.kind != "duckdb":
            return
        fresh = catalog.with_name(catalog.name + ".compacting")
        fresh.unlink(missing_ok=True)
        options = f" (ENCRYPTION_KEY {_sql_text(self.key)})" if self.key else ""
        with owner_only():
            con = self._connection(catalog)
            try:
                con.execute(f"ATTACH {_sql_text(str(catalog))} AS catalog{options}")
                con.execute(f"ATTACH {_sql_text(str(fresh))} AS fresh{options}")
                con.execute("COPY FROM DATABASE catalog TO fresh")
            finally:
                con.close()
        os.replace(fresh, catalog)

    def _connection(self, path: Path) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with the project's settings, nothing attached yet."""
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
            # Readers spill too: beside the warehouse, not into whatever folder the command ran in.
            spill = self.setting("temp_directory") or str(Path(self.file).resolve().parent / ".duckdb_tmp")
            con.execute("SET temp_directory = ?", [spill])
            if self.key:
                # DuckDB 1.4 writes encrypted files only with httpfs's crypto module loaded.
                con.execute("LOAD httpfs")
                # Spill files of an encrypted warehouse are encrypted too (set before attaching).
                con.execute("SET temp_file_encryption = true")
        except BaseException:
            con.close()
            raise
        return con

    def check_key(self) -> None:
        """Raise `WarehouseKeyError` (one true line) when the key does not fit the file: missing,
        wrong, or given for a plaintext file. Reads the read copy when there is one (a writer
        never locks it); writes nothing. A file that cannot be opened for another reason
        (locked) is left to the command's own connection."""
        if self.lake:
            return  # a key that does not fit the catalog is told when it is attached
        path = Path(self.file)
        probe = self.read_copy if self.read_copy.exists() else path
        if not probe.exists():
            return
        con = self._connection(path)
        try:
            con.execute(self._attach_sql(probe, "probe", read_only=True))
        except duckdb.Error as exc:
            error = self._key_error(path, str(exc))
            if error is not None:
                raise error from None
        finally:
            con.close()

    def _attach_sql(self, path: Path, alias: str, read_only: bool) -> str:
        options = ["READ_ONLY"] if read_only else []
        if self.key:
            options.append(f"ENCRYPTION_KEY {_sql_text(self.key)}")
        return f"ATTACH {_sql_text(str(path))} AS {alias}" + (f" ({', '.join(options)})" if options else "")

    def _key_error(self, path: Path, message: str) -> WarehouseKeyError | None:
        """The one true line for DuckDB's encryption errors; None for any other error."""
        lowered = message.lower()
        if "without a key" in lowered:
            return WarehouseKeyError(f"cannot open the warehouse {path}: it is encrypted (set CONSENT_WAREHOUSE_KEY)")
        if "wrong encryption key" in lowered:
            return WarehouseKeyError(f"cannot open the warehouse {path}: wrong key (check CONSENT_WAREHOUSE_KEY)")
        if "not encrypted" in lowered:
            return WarehouseKeyError(f"cannot open the warehouse {path}: it is not encrypted, but a key was given "
                                     "(unset CONSENT_WAREHOUSE_KEY to open it)")
        if "encrypt" in lowered:
            return WarehouseKeyError(f"cannot open the warehouse {path}: {message.splitlines()[0]}")
        return None

    def _attach(self, con: duckdb.DuckDBPyConnection, attach: str, path: Path) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                con.execute(attach)
                return
            except duckdb.Error as exc:
                message = str(exc)
                error = self._key_error(path, message)
                if error is not None:
                    raise error from None
                if "lock" not in message.lower():
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(
                        f"the warehouse {path} is locked by another run; waited {self.lock_timeout:g} s"
                    ) from exc
                time.sleep(0.2)

    # The read copy: what every reader opens, so that no reader ever holds the warehouse's file.

    @property
    def read_copy(self) -> Path:
        """`<name>.read.duckdb` beside the warehouse: a byte copy of it as the last writer committed it."""
        path = Path(self.file)
        return path.with_name(f"{path.stem}.read{path.suffix or '.duckdb'}")

    def publish_read_copy(self) -> Path | None:
        """Replace the read copy with the committed warehouse, atomically (a new file renamed over
        the old one: a reader holding the old copy keeps it and blocks nothing). Call under the run
        lock, with no connection of this process open; None when there is no warehouse yet, or on
        DuckLake, where readers attach the catalog read-only instead (they never block a writer)."""
        path = Path(self.file)
        if self.lake or not path.exists():
            return None
        self.close_held_writer()  # its committed transactions folded in, and no second instance on the file
        with owner_only():
            if path.with_name(path.name + ".wal").exists():
                con = self._connection(path)  # fold committed transactions into the file the copy is made of
                try:
                    self._attach(con, self._attach_sql(path, "folded", read_only=False), path)
                    con.execute("CHECKPOINT folded")
                finally:
                    con.close()
            con = self._connection(path)
            try:
                # A read-only attach holds DuckDB's shared lock: no writer can start while the bytes are copied.
                self._attach(con, self._attach_sql(path, "held", read_only=True), path)
                if path.with_name(path.name + ".wal").exists():
                    raise RuntimeError(f"the warehouse {path} has a write-ahead log that a checkpoint did not fold in")
                replace_atomically(path, self.read_copy)
            finally:
                con.close()
        return self.read_copy

    def readable_file(self) -> Path:
        """The file a reader opens: the read copy, made first when it is missing or older than the
        warehouse and no writer holds the run lock; while a writer does, the last copy (or, for a
        warehouse no code has copied yet, the warehouse itself)."""
        path, copy = Path(self.file), self.read_copy
        if not path.exists():
            return path
        if _is_current(copy, path):
            return copy
        lock = RunLock(path, 0)
        try:
            lock.acquire()
        except (WarehouseLocked, OSError):
            return copy if copy.exists() else path
        try:
            self.publish_read_copy()
        except (OSError, WarehouseLocked, RuntimeError, duckdb.Error):
            return path  # no copy can be written here (permissions, space): read the warehouse itself
        finally:
            lock.release()
        return copy

    @contextmanager
    def reader(self, hashing: bool = False, snapshot_time: datetime | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the read copy (see `readable_file`): what every read command uses.
        On DuckLake: the catalog attached read-only (the snapshot committed when it attached)."""
        with self.connect(read_only=True, hashing=hashing, file=None if self.lake else self.readable_file(),
                          snapshot_time=snapshot_time) as con:
            yield con


# A DuckLake writer's DuckDB instance on a PostgreSQL catalog, kept open for the process (one catalog
# at a time). Opening one loads the DuckLake and PostgreSQL extensions and attaches the catalog: 0.56 s
# against 0.04 s for a file (bench/ducklake.py), and a run opens a connection per step and per check.
# Only PostgreSQL catalogs: they take no file lock, so other processes write beside it as before.
_lake_writer: tuple[str, duckdb.DuckDBPyConnection] | None = None
_lake_writer_guard = threading.Lock()


def _shared_lake_writer(access: WarehouseAccess, lake: Lake, path: Path) -> duckdb.DuckDBPyConnection:
    """The process's instance with `lake` attached for writing, opened on first use; another catalog,
    key, data path, memory setting or S3 configuration closes the one before and opens its own."""
    global _lake_writer
    identity = "\x1f".join([lake.attach_sql("warehouse", read_only=False, key=access.key),
                            str(access.setting("memory_limit")), str(access.setting("temp_directory")),
                            s3_secret_sql(os.environ), str(access.key)])
    with _lake_writer_guard:
        if _lake_writer is not None and _lake_writer[0] == identity:
            return _lake_writer[1]
        _close_lake_writer()
        con = access._connection(path)
        try:
            access._attach_lake(con, lake, read_only=False)
        except BaseException:
            con.close()
            raise
        _lake_writer = (identity, con)
        return con


def _drop_lake_writer() -> None:
    with _lake_writer_guard:
        _close_lake_writer()


def close_shared_connections() -> None:
    """Close the process's shared DuckLake writer instance (the next writer connection opens a new one):
    before its catalog's server goes away."""
    _drop_lake_writer()


def _close_lake_writer() -> None:
    global _lake_writer
    if _lake_writer is not None:
        try:
            _lake_writer[1].close()
        except duckdb.Error:
            pass
        _lake_writer = None


atexit.register(close_shared_connections)


# File warehouses whose writer instance a run holds (`WarehouseAccess.hold_writer`): by resolved
# path, the open instance (None until the first writer connection, and after `_close_held`).
_held_files: dict[str, duckdb.DuckDBPyConnection | None] = {}
_held_guard = threading.RLock()


def _held_key(path: Path) -> str:
    return str(path.resolve())


def _close_held(key: str) -> None:
    with _held_guard:
        con = _held_files.get(key)
        if con is None:
            return
        _held_files[key] = None
    try:
        con.close()
    except duckdb.Error:
        pass


def _is_current(copy: Path, warehouse: Path) -> bool:
    """The copy was made after the warehouse's last write, and no write is pending in its WAL."""
    try:
        return (copy.stat().st_mtime_ns >= warehouse.stat().st_mtime_ns
                and not warehouse.with_name(warehouse.name + ".wal").exists())
    except FileNotFoundError:
        return False


def replace_atomically(source: Path, target: Path) -> None:
    """Copy `source` to a new owner-only file beside `target`, fsync it, rename it over `target`."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)  # left by a copy that died (the caller holds the run lock)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        shutil.copyfile(source, temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)


_umask_guard = threading.Lock()
_umask_depth = 0
_umask_before = 0


@contextmanager
def owner_only() -> Iterator[None]:
    """Files created meanwhile by this process are readable by their owner only (umask 077;
    nested and concurrent uses restore the umask once, when the last one ends)."""
    global _umask_depth, _umask_before
    with _umask_guard:
        if _umask_depth == 0:
            _umask_before = os.umask(0o077)
            os.umask(_umask_before | 0o077)
        _umask_depth += 1
    try:
        yield
    finally:
        with _umask_guard:
            _umask_depth -= 1
            if _umask_depth == 0:
                os.umask(_umask_before)


def owner_only_file(path: Path) -> None:
    """Take group and other permissions away from a file this process owns (best effort)."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except OSError:
        pass


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

    @property
    def bucket_count(self) -> int:
        """Buckets the contacts are decided in, each in a transaction of its own (1: one transaction)."""
        return int(self.setting("buckets"))

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


def days(text: str) -> int:
    """A whole number of days, 0 or more."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def positive(text: str) -> int:
    """A whole number, 1 or more."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def memory_size(text: str) -> str:
    """A DuckDB memory size ("2GB", "512MB", "3GiB"), checked before any connection is made."""
    if not _MEMORY_SIZE.fullmatch(text):
        raise ValueError(text)
    return text.strip()


# Every setting any entry point reads from the environment, and the defaults when it is unset.
SETTINGS = (
    Setting("path", "CONSENT_WAREHOUSE"),
    Setting("data_path", "CONSENT_DATA_PATH"),
    Setting("encryption_key", "CONSENT_WAREHOUSE_KEY"),
    Setting("hash_salt", "CONSENT_HASH_SALT"),
    Setting("alert_command", "CONSENT_ALERT_COMMAND"),
    Setting("lock_timeout_seconds", "CONSENT_LOCK_TIMEOUT_SECONDS", float),
    Setting("memory_limit", "CONSENT_MEMORY_LIMIT", memory_size, "memory size such as 2GB or 512MB"),
    Setting("temp_directory", "CONSENT_TEMP_DIRECTORY"),
    Setting("snapshot_retention_days", "CONSENT_SNAPSHOT_RETENTION_DAYS", days, "whole number of days (0 or more)"),
    Setting("exports_dir", "CONSENT_EXPORTS"),
    Setting("policy_file", "CONSENT_POLICY"),
    Setting("workers", "CONSENT_WORKERS", int),
    Setting("buckets", "CONSENT_BUCKETS", positive, "whole number (1 or more)"),
    Setting("audiences_dir", "CONSENT_AUDIENCES"),
)
DEFAULTS = {"path": DEFAULT_WAREHOUSE, "lock_timeout_seconds": 30.0, "exports_dir": DEFAULT_EXPORTS, "workers": DEFAULT_WORKERS, "buckets": 1,
            "memory_limit": DEFAULT_MEMORY_LIMIT, "snapshot_retention_days": DEFAULT_SNAPSHOT_RETENTION_DAYS}


@dataclass
class Warehouse(WarehouseAccess):
    """The warehouse for a command that needs no Dagster (every field: None = from the environment)."""

    path: Optional[str] = None
    data_path: Optional[str] = None
    lock_timeout_seconds: Optional[float] = None
    memory_limit: Optional[str] = None
    temp_directory: Optional[str] = None
    snapshot_retention_days: Optional[int] = None
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
    buckets: Optional[int] = None
    audiences_dir: Optional[str] = None


def access_from_env(overrides: dict[str, dict] | None = None) -> dict:
    """`warehouse` and `settings` without Dagster: the fields given in `overrides` (None: not
    given) are set, every other one is read from the environment when used."""
    given = {name: {k: v for k, v in fields.items() if v is not None} for name, fields in (overrides or {}).items()}
    return {"warehouse": Warehouse(**given.get("warehouse", {})), "settings": Settings(**given.get("settings", {}))}
