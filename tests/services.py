"""Throwaway services for the DuckLake tests: a PostgreSQL cluster and an S3-compatible endpoint.

Each pytest process (each xdist worker) starts its own on a free loopback port and stops it at
the end of the session: nothing is shared between workers, so no lock is needed. PostgreSQL comes
from Debian's package (`make test` installs it when missing); where it cannot be had the tests
that need it are skipped with the reason, except on CI, where they fail. The S3 endpoint is
moto's server, in a thread of this process.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

S3_KEY_ID, S3_SECRET, S3_REGION = "testing", "testing", "us-east-1"


def postgres_bin() -> Path | None:
    """The folder of `initdb` and `pg_ctl` (Debian keeps them out of PATH), newest version first."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found and shutil.which("initdb") else None


def _version(folder: str) -> int:
    name = Path(folder).parent.name
    return int(name) if name.isdigit() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Postgres:
    bin: Path
    folder: Path
    port: int
    as_user: list[str]

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string to database `dbname` of this cluster."""
        return f"host=127.0.0.1 port={self.port} user=consent dbname={dbname}"

    def create_database(self) -> str:
        """A new empty database (one DuckLake catalog per test); its name."""
        name = "lake_" + uuid.uuid4().hex[:12]
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "consent", name)
        return name

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> Postgres:
    """initdb + pg_ctl in a new temporary folder, listening on 127.0.0.1 only (trust auth: loopback,
    throwaway). As root the server runs as the `postgres` user, which PostgreSQL requires."""
    folder = postgres_bin()
    if folder is None:
        raise FileNotFoundError("PostgreSQL's initdb/pg_ctl not found (Debian package `postgresql`; `make test` installs it)")
    base = Path(tempfile.mkdtemp(prefix="consent-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken between probing and binding: try another
        service = Postgres(folder, base, free_port(), as_user)
        try:
            if not (base / "data").exists():
                service._run("initdb", "-D", str(base / "data"), "-U", "consent", "--auth=trust", "-E", "UTF8",
                             "--no-sync")
            service._run("pg_ctl", "-D", str(base / "data"), "-l", str(base / "server.log"), "-w", "-t", "30",
                         "-o", f"-p {service.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
            return service
        except subprocess.CalledProcessError as exc:
            last_error = exc
    log = (base / "server.log").read_text(errors="replace")[-2000:] if (base / "server.log").exists() else ""
    shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start: {last_error}; {getattr(last_error, 'stderr', b'')!r}\n{log}")


@dataclass
class S3:
    endpoint: str  # http://127.0.0.1:PORT
    server: object

    def bucket(self) -> str:
        """A new empty bucket; its name."""
        import boto3

        name = "lake-" + uuid.uuid4().hex[:12]
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY_ID,
                     aws_secret_access_key=S3_SECRET, region_name=S3_REGION).create_bucket(Bucket=name)
        return name

    def environment(self) -> dict[str, str]:
        return {"CONSENT_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": S3_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": S3_REGION}


def start_s3() -> S3:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return S3(f"http://{host}:{port}", server)


def unavailable(reason: str) -> None:
    """Skip a test whose service cannot be had; on CI, fail it: there the service must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"test service unavailable on CI: {reason}")
    pytest.skip(f"test service unavailable: {reason}")


@pytest.fixture(scope="session")
def postgres_service():
    try:
        service = start_postgres()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        unavailable(str(exc))
    yield service
    from consent.storage.access import close_shared_connections

    close_shared_connections()  # the process's DuckLake writer instance, while its server still runs
    service.stop()


@pytest.fixture
def postgres_catalog(postgres_service) -> str:
    """`ducklake:postgres:<dsn>` of a new, empty catalog database."""
    return "ducklake:postgres:" + postgres_service.dsn(postgres_service.create_database())


@pytest.fixture(scope="session")
def s3_service():
    try:
        service = start_s3()
    except (ImportError, OSError) as exc:
        unavailable(f"moto's S3 server: {exc}")
    yield service
    service.server.stop()
