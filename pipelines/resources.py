"""Resources: the one door to the DuckDB warehouse, and the run's settings.

Every DuckDB connection the project opens (assets, checks, CLI, audits) comes
from `WarehouseResource.connect`, so locking, read-only access and (later)
encryption are decided here once.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
import duckdb

from consent.policy import ChannelsFile, Policy, load_channels, load_policy
from consent.warehouse import ensure_schema

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXPORTS = str(REPO_ROOT / "sample_exports")
DEFAULT_WAREHOUSE = "warehouse/consent.duckdb"


class WarehouseLocked(Exception):
    """Another process holds the warehouse's write lock for longer than the timeout."""


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB consent warehouse file."""

    path: str = DEFAULT_WAREHOUSE
    lock_timeout_seconds: float = 30.0

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection; waits up to `lock_timeout_seconds` for another writer."""
        path = Path(self.path)
        if read_only and not path.exists():
            raise FileNotFoundError(f"no warehouse at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(
                        f"the warehouse {path} is locked by another run; waited {self.lock_timeout_seconds:g} s"
                    ) from exc
                time.sleep(0.2)
        try:
            con.execute("SET TimeZone = 'UTC'")
            if not read_only:
                ensure_schema(con)
            yield con
        finally:
            con.close()


class ConsentSettings(dg.ConfigurableResource):
    """Where the exports are, which policy applies, and the run's clock."""

    exports_dir: str = DEFAULT_EXPORTS
    policy_file: Optional[str] = None
    # Fixes "now" for windows and future-date checks (tests, back-fills). ISO 8601.
    as_of: Optional[str] = None
    # Rebuild every status from the ledger instead of only touched contacts.
    full: bool = False
    # Worker processes for phone normalisation of large batches.
    workers: int = 1

    @property
    def exports_path(self) -> Path:
        return Path(self.exports_dir)

    def load_policy(self) -> Policy:
        path = Path(self.policy_file) if self.policy_file else self.exports_path / "policy.yaml"
        return load_policy(path)

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


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The one place that decides paths: environment variables, else defaults."""
    warehouse = dg.EnvVar("CONSENT_WAREHOUSE") if os.environ.get("CONSENT_WAREHOUSE") else DEFAULT_WAREHOUSE
    exports = dg.EnvVar("CONSENT_EXPORTS") if os.environ.get("CONSENT_EXPORTS") else DEFAULT_EXPORTS
    return {
        "warehouse": WarehouseResource(path=warehouse),
        "settings": ConsentSettings(exports_dir=exports),
    }
