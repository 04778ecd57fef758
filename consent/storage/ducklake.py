"""A warehouse on DuckLake: the catalog in PostgreSQL, SQLite or a DuckDB file, the data as Parquet.

`--warehouse ducklake:postgres:<libpq string>` (several writers, several machines),
`ducklake:sqlite:<file>` or `ducklake:<file>` (one machine); `--data-path` names where the Parquet
files go (a folder or `s3://bucket/prefix`). The connection attaches the catalog as `warehouse` and
`USE`s it, so every statement the file warehouse runs runs here unchanged, except what DuckLake
lacks: key constraints (the DDL drops them, `without_constraints`) and `INSERT OR REPLACE` /
`ON CONFLICT` (the statements that need an upsert use DELETE + INSERT or MERGE, which both have).
The extensions come from the `duckdb-ext-*` packages: nothing downloads at run time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

PREFIX = "ducklake:"
# Where a catalog with no local folder of its own (PostgreSQL, data on object storage) keeps what
# the warehouse keeps beside it (the hash salt when not configured, the dashboard, alerts).
DEFAULT_HOME = Path("warehouse") / "ducklake"


def is_lake(location: str | os.PathLike | None) -> bool:
    return str(location or "").startswith(PREFIX)


def is_remote(path: str) -> bool:
    return "://" in path


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Lake:
    """A DuckLake catalog as `--warehouse` names it, and the data path `--data-path` gives."""

    location: str
    data_path: str | None = None

    @property
    def catalog(self) -> str:
        return self.location[len(PREFIX):]

    @property
    def kind(self) -> str:
        """postgres, sqlite or duckdb (a DuckDB file holds the catalog)."""
        for kind in ("postgres", "sqlite"):
            if self.catalog.startswith(kind + ":"):
                return kind
        return "duckdb"

    @property
    def catalog_file(self) -> Path | None:
        if self.kind == "postgres":
            return None
        return Path(self.catalog.removeprefix("sqlite:"))

    @property
    def anchor(self) -> Path:
        """A local path whose folder holds what the warehouse keeps beside it: the catalog file, else
        the local data folder, else `warehouse/ducklake` under the working directory."""
        if self.catalog_file is not None:
            return self.catalog_file
        if self.data_path and not is_remote(self.data_path):
            return Path(self.data_path.rstrip("/") or "/")
        return DEFAULT_HOME

    def describe(self) -> str:
        """The location for messages, with any password in the libpq string hidden."""
        return masked(self.location)

    def exists(self) -> bool:
        """False only when the catalog file is missing (a PostgreSQL catalog is checked by attaching)."""
        return self.catalog_file is None or self.catalog_file.exists()

    def attach_sql(self, alias: str, *, read_only: bool, key: str | None, snapshot_time=None) -> str:
        """ATTACH of the catalog. With a key, new data files are encrypted (DuckLake's ENCRYPTED: one
        key per file, kept in the catalog) and a DuckDB-file catalog is encrypted with the key. With
        `snapshot_time` (naive UTC; read-only), the catalog as it stood then (DuckLake's SNAPSHOT_TIME)."""
        options = []
        data_path = self.data_path
        if not data_path and self.catalog_file is not None and not self.catalog_file.exists():
            data_path = f"{self.catalog_file}.files"  # a new catalog file: its data beside it
        if data_path and not read_only:
            options.append(f"DATA_PATH {sql_text(_folder(data_path))}")
        if read_only:
            options.append("READ_ONLY")
            if snapshot_time is not None:
                options.append(f"SNAPSHOT_TIME {sql_text(snapshot_time.isoformat(sep=' ') + '+00')}")
        elif key:
            options.append("ENCRYPTED")
        if key and self.kind == "duckdb":
            options.append(f"META_ENCRYPTION_KEY {sql_text(key)}")
        text = f"ATTACH {sql_text(self.location)} AS {alias}"
        return text + (f" ({', '.join(options)})" if options else "")


def masked(text: str) -> str:
    """`text` with the value of any `password=` (a libpq connection string's) hidden."""
    return re.sub(r"(password\s*=\s*)('[^']*'|[^\s\"]+)", r"\1***", text, flags=re.IGNORECASE)


def _folder(path: str) -> str:
    """The data path as DuckLake stores it: absolute (every process, wherever it runs from), ending in /."""
    path = path if is_remote(path) else str(Path(path).resolve())
    return path if path.endswith("/") else path + "/"


def prepare(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Load what attaching `lake` needs on `con`; the S3 secret when the data is (or may be) on S3."""
    con.execute("LOAD ducklake")
    if lake.kind == "postgres":
        con.execute("LOAD postgres_scanner")
    elif lake.kind == "sqlite":
        con.execute("LOAD sqlite_scanner")
    if lake.catalog_file is not None:
        lake.catalog_file.parent.mkdir(parents=True, exist_ok=True)
    elif lake.data_path and not is_remote(lake.data_path):
        Path(lake.data_path).mkdir(parents=True, exist_ok=True)
    on_s3 = (lake.data_path or "").startswith("s3://")
    if on_s3 or os.environ.get("CONSENT_S3_ENDPOINT") or os.environ.get("AWS_ACCESS_KEY_ID"):
        con.execute("LOAD httpfs")
        con.execute(s3_secret_sql(os.environ))


def s3_secret_sql(environ) -> str:
    """A temporary (in-memory) S3 secret from the AWS variables and CONSENT_S3_ENDPOINT."""
    options = ["TYPE s3", "PROVIDER config"]
    for option, variable in (("KEY_ID", "AWS_ACCESS_KEY_ID"), ("SECRET", "AWS_SECRET_ACCESS_KEY"),
                             ("SESSION_TOKEN", "AWS_SESSION_TOKEN"), ("REGION", "AWS_REGION")):
        if environ.get(variable):
            options.append(f"{option} {sql_text(environ[variable])}")
    endpoint = environ.get("CONSENT_S3_ENDPOINT", "").strip()
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options += [f"ENDPOINT {sql_text(host.rstrip('/'))}", "URL_STYLE 'path'",
                    f"USE_SSL {'false' if scheme == 'http' else 'true'}"]
    return f"CREATE OR REPLACE TEMPORARY SECRET consent_s3 ({', '.join(options)})"


def allow_only_lake_files(con: duckdb.DuckDBPyConnection, lake: Lake, alias: str = "warehouse") -> None:
    """Before `enable_external_access = false` on a reader: the lake's own files stay readable (its
    data path, its catalog file), nothing else."""
    row = con.execute(
        f"SELECT value FROM __ducklake_metadata_{alias}.ducklake_metadata WHERE key = 'data_path'").fetchone()
    directories = [_folder(row[0])] if row and row[0] else []
    if lake.catalog_file is not None:
        con.execute("SET allowed_paths = ?", [[str(lake.catalog_file.resolve())]])
    con.execute("SET allowed_directories = ?", [directories])


def forget_deleted_rows(con: duckdb.DuckDBPyConnection, alias: str = "warehouse") -> None:
    """After an erasure: no byte of a deleted row left in the data files or the catalog's tables.

    Deleted rows stay in their Parquet files (a delete file hides them) and in the statistics DuckLake
    keeps per table (a column's minimum and maximum only ever widen). So every table is rebuilt under
    its own definition (new files, statistics of the rows it holds), then every older snapshot
    expires and the files only they used are removed."""
    names = con.execute("SELECT schema_name, table_name, sql FROM duckdb_tables() WHERE database_name = ? "
                        "AND NOT temporary", [alias]).fetchall()
    for schema, table, definition in names:  # the published tables (`main`) and the run's scratch (`staging`)
        rebuilt = f'{alias}."{schema}"."{table}__rebuilt"'
        # the table's own CREATE TABLE (its columns, NOT NULL), under the new name
        created = re.sub(r"^CREATE TABLE\s+((\"[^\"]+\"|[^\s(.\"]+)\.)?(\"[^\"]+\"|[^\s(]+)",
                         f"CREATE TABLE {rebuilt}", definition)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(created)
            con.execute(f'INSERT INTO {rebuilt} BY NAME SELECT * FROM {alias}."{schema}"."{table}"')
            con.execute(f'DROP TABLE {alias}."{schema}"."{table}"')
            con.execute(f'ALTER TABLE {rebuilt} RENAME TO "{table}"')
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    con.execute(f"CALL ducklake_expire_snapshots({sql_text(alias)}, older_than => now())")
    con.execute(f"CALL ducklake_cleanup_old_files({sql_text(alias)}, cleanup_all => true)")


def is_lake_connection(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection's default catalog is a DuckLake."""
    row = con.execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return bool(row) and row[0] == "ducklake"


def encrypted(con: duckdb.DuckDBPyConnection, alias: str = "warehouse") -> bool:
    """Whether the attached DuckLake writes encrypted data files (fixed when the catalog was created)."""
    row = con.execute(
        f"SELECT value FROM __ducklake_metadata_{alias}.ducklake_metadata WHERE key = 'encrypted'").fetchone()
    return bool(row) and row[0] == "true"


_KEY = re.compile(r",\s*PRIMARY KEY\s*\([^)]*\)|\s+PRIMARY KEY\b|\s+UNIQUE\b", re.IGNORECASE)


def without_constraints(ddl: str) -> str:
    """A CREATE TABLE without its PRIMARY KEY / UNIQUE constraints, which DuckLake does not have:
    there uniqueness is kept by the statements that write (and checked by the warehouse's checks)."""
    return _KEY.sub("", ddl)
