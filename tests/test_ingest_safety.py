"""Reading exports safely: one read per file, headers never guessed, OS errors per file, and the
exports folder as the boundary of every read.

Tests run as root, and chmod 000 does not stop root: a permission error is simulated by making
`os.open` / `io.open` / `os.scandir` raise PermissionError for one path (`deny`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from consent.reading.channels.csv_export import read_csv
from consent.domain.events import FileContext
from consent.reading.ingest import list_exports
from consent.storage.migrations import ensure_schema
from consent.domain.policy import ChannelConfig, Policy, load_channels
from consent.run.publish import publish
from consent.run.staging import stage_run
from consent.storage.sql import use_salt
from tests.conftest import query, run_cli

AS_OF = datetime(2026, 11, 10)
HEADER = "phone,country,event_type,purposes,occurred_at\n"
OPT_OUT = HEADER + "+4915112345678,,opt_out,marketing,2026-11-03T07:00:00Z\n"
OPT_IN = HEADER + "+4915112345678,,opt_in ,marketing,2026-11-02T07:00:00Z\n"  # as long as OPT_OUT
NUMBER_DIGITS = "4915112345678"


def night(exports: Path, con: duckdb.DuckDBPyConnection, run_id: str, *, reread: bool = False):
    """One run without Dagster: staging and publish on `con`."""

    @contextmanager
    def connect():
        yield con

    use_salt(con, "test-salt")  # what the warehouse's door does at connect
    staged = stage_run(connect, exports, policy=Policy(), channels=load_channels(exports), as_of=AS_OF,
                       run_id=run_id, reread=reread)
    publish(con, policy=Policy(), full=False)
    return staged


@pytest.fixture
def con(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_schema(connection)
    yield connection
    connection.close()


def status(con, phone: str = "+4915112345678", purpose: str = "marketing") -> str | None:
    row = con.execute("SELECT status FROM consent_status WHERE phone_e164 = ? AND purpose = ?", [phone, purpose]).fetchone()
    return row[0] if row else None


def events_of(con, phone: str) -> int:
    return con.execute("SELECT count(*) FROM consent_events WHERE phone_e164 = ?", [phone]).fetchone()[0]


def file_row(con, source_file: str) -> dict:
    columns = ["state", "file_hash", "rows_read", "events", "quarantined", "skipped", "notes", "mtime_ns"]
    row = con.execute(f"SELECT {', '.join(columns)} FROM staging.stg_source_files WHERE source_file = ?", [source_file]).fetchone()
    return dict(zip(columns, row)) if row else {}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@contextmanager
def opens_of(monkeypatch, path: Path, before_open):
    """Call `before_open(n)` before the n-th open (1, 2, ...) of `path` for reading, by any means
    (io.open, Path.open/read_bytes, os.open)."""
    real_io, real_os = io.open, os.open
    target = os.path.realpath(path)
    count = {"n": 0}

    def touched(file) -> bool:
        return isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(file) == target

    def patched_io(file, mode="r", *args, **kwargs):
        if touched(file) and "r" in mode:
            count["n"] += 1
            before_open(count["n"])
        return real_io(file, mode, *args, **kwargs)

    def patched_os(file, flags, *args, **kwargs):
        if touched(file) and not flags & (os.O_WRONLY | os.O_RDWR):
            count["n"] += 1
            before_open(count["n"])
        return real_os(file, flags, *args, **kwargs)

    monkeypatch.setattr(io, "open", patched_io)
    monkeypatch.setattr(os, "open", patched_os)
    try:
        yield count
    finally:
        monkeypatch.setattr(io, "open", real_io)
        monkeypatch.setattr(os, "open", real_os)


def deny(path: Path):
    def refuse(n: int) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    return refuse


# -- read what you hash --------------------------------------------------------------------------


def test_a_file_rewritten_while_the_night_reads_it_loses_no_opt_out(tmp_path, con, monkeypatch):
    """The exporter regenerates optouts.csv in place during the night: between the first and the
    second open it holds only its header, then the same opt-out again. The hash registered is the
    hash of the bytes parsed, so the opt-out is published (the same night, or the next)."""
    exports = tmp_path / "exports"
    path = write(exports / "preference_center" / "optouts.csv", OPT_OUT)

    def regenerate(n: int) -> None:
        if n == 2:  # a second read of the file sees the exporter half-way
            path.write_text(HEADER)

    with opens_of(monkeypatch, path, regenerate):
        night(exports, con, "r1")
    path.write_text(OPT_OUT)  # the exporter is done: the same content as before the night
    night(exports, con, "r2")
    assert status(con) == "opted_out"
    registered = con.execute("SELECT file_hash, events FROM source_files WHERE source_file = 'preference_center/optouts.csv'").fetchall()
    assert (hashlib.sha256(OPT_OUT.encode()).hexdigest(), 1) in registered


def test_a_file_that_changes_while_read_is_read_again(tmp_path, con, monkeypatch):
    """A line appended while the file is read: the read is repeated, and the file is registered
    with the hash of what was parsed (both lines)."""
    exports = tmp_path / "exports"
    path = write(exports / "preference_center" / "optouts.csv", OPT_IN)
    second = "+4915112345679,,opt_out,marketing,2026-11-03T07:00:00Z\n"
    grow_while_read(monkeypatch, path, second, times=1)
    staged = night(exports, con, "r1")
    (stat,) = [f for f in staged.files if f.source_file == "preference_center/optouts.csv"]
    assert stat.state == "new" and stat.rows_read == 2 and stat.conserved
    assert stat.file_hash == hashlib.sha256((OPT_IN + second).encode()).hexdigest()
    assert status(con, "+4915112345679") == "opted_out"


def test_a_file_that_keeps_changing_is_not_registered_and_is_read_next_night(tmp_path, con, monkeypatch):
    exports = tmp_path / "exports"
    path = write(exports / "preference_center" / "optouts.csv", OPT_OUT)
    write(exports / "web_form" / "signups.csv", HEADER + "+4915112345670,,opt_in,marketing,2026-11-02T07:00:00Z\n")
    grow_while_read(monkeypatch, path, "\n", times=99)
    night(exports, con, "r1")
    row = file_row(con, "preference_center/optouts.csv")
    assert row["state"] == "unread" and "changed while it was read" in row["notes"][0]
    assert not con.execute("SELECT * FROM source_files WHERE source_file = 'preference_center/optouts.csv'").fetchall()
    assert events_of(con, "+4915112345670") == 1  # the rest of the night is published
    monkeypatch.undo()
    night(exports, con, "r2")
    assert status(con) == "opted_out"


def grow_while_read(monkeypatch, path: Path, line: str, times: int) -> None:
    """Append `line` to the file during each of its first `times` reads (after the bytes are read,
    before the read ends): what a writer still writing does."""
    real = os.fdopen
    target = os.path.realpath(path)
    left = {"n": times}

    def fdopen(fd, *args, **kwargs):
        handle = real(fd, *args, **kwargs)
        if left["n"] > 0 and os.path.realpath(f"/proc/self/fd/{fd}") == target:
            left["n"] -= 1
            read = handle.read

            def read_then_grow(*a):
                data = read(*a)
                with open(target, "a") as out:
                    out.write(line)
                return data

            handle = _Wrapped(handle, read_then_grow)
        return handle

    monkeypatch.setattr(os, "fdopen", fdopen)


class _Wrapped:
    def __init__(self, handle, read):
        self._handle, self.read = handle, read

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def test_a_rewrite_that_keeps_size_and_mtime_is_read_again(tmp_path, con, monkeypatch):
    """`cp -p`, `rsync -t` or `touch -d` set mtime back; the fingerprint also holds the ctime,
    which nothing sets back."""
    import consent.reading.ingest as ingest

    monkeypatch.setattr(ingest, "RACY_NS", 0, raising=False)  # keep a fingerprint however recent the file
    exports = tmp_path / "exports"
    path = write(exports / "preference_center" / "optouts.csv", OPT_IN)
    night(exports, con, "r1")
    assert status(con) != "opted_out"
    assert con.execute("SELECT count(*) FROM file_fingerprints").fetchone()[0] >= 1
    mtime = path.stat().st_mtime_ns
    path.write_text(OPT_OUT)  # same size
    os.utime(path, ns=(mtime, mtime))
    assert path.stat().st_size == len(OPT_IN.encode()) and path.stat().st_mtime_ns == mtime
    night(exports, con, "r3")
    assert status(con) == "opted_out"


def test_a_file_written_just_before_the_run_keeps_no_fingerprint(tmp_path, con):
    """A write in the same clock tick as the read would leave size and times unchanged: a file
    changed within seconds of its read is hashed again next night."""
    exports = tmp_path / "exports"
    write(exports / "preference_center" / "optouts.csv", OPT_OUT)
    night(exports, con, "r1")
    assert file_row(con, "preference_center/optouts.csv")["mtime_ns"] is None
    assert not con.execute("SELECT * FROM file_fingerprints").fetchall()
    assert con.execute("SELECT count(*) FROM source_files").fetchone()[0] == 1


def test_reread_recovers_a_file_registered_with_a_wrong_hash_and_adds_nothing_twice(exports, warehouse_path, capsys):
    """A night of the old reader registered optouts.csv with the hash of content it never parsed:
    later nights skip it. `consent run --reread` reads it (and every file) again; a second
    `--reread` adds no event, quarantine row or skipped item."""
    optouts = exports / "preference_center" / "optouts.csv"
    real = optouts.read_text()
    optouts.write_text(real.splitlines()[0] + "\n")  # the night parsed a header-only file
    assert run_cli(exports, warehouse_path) == 0
    optouts.write_text(real)
    con = duckdb.connect(str(warehouse_path))
    con.execute("UPDATE source_files SET file_hash = ? WHERE source_file = 'preference_center/optouts.csv'",
                [hashlib.sha256(real.encode()).hexdigest()])
    con.close()
    assert run_cli(exports, warehouse_path) == 0
    assert ("+4915112345678", "utility") not in opted_out(warehouse_path)  # the wrong hash hides the opt-out
    assert run_cli(exports, warehouse_path, "--reread") == 0
    assert ("+4915112345678", "utility") in opted_out(warehouse_path)
    counts = ledger_counts(warehouse_path)
    assert min(counts.values()) > 0
    assert run_cli(exports, warehouse_path, "--reread") == 0
    assert ledger_counts(warehouse_path) == counts
    reread = query(warehouse_path, "SELECT files_read FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]
    assert reread == len([p for p in exports.rglob("*") if p.is_file() and p.parent != exports])
    capsys.readouterr()


def opted_out(path: Path) -> list[tuple]:
    return query(path, "SELECT phone_e164, purpose FROM consent_status WHERE status = 'opted_out' ORDER BY ALL")


def ledger_counts(path: Path) -> dict[str, int]:
    return {t: query(path, f"SELECT count(*) FROM {t}")[0][0] for t in ("consent_events", "quarantine", "skipped_items")}


# -- headers are never guessed -------------------------------------------------------------------


def ctx() -> FileContext:
    return FileContext(channel="preference_center", source_file="preference_center/x.csv", file_hash="h")


@pytest.mark.parametrize(
    ("header", "config"),
    [
        ("phone,event_type,purposes,occurred_at,phone", ChannelConfig()),
        ("Phone,event_type,purposes,occurred_at, PHONE", ChannelConfig()),
        ("\ufeffphone,event_type,purposes,occurred_at,Mobile", ChannelConfig(columns={"phone": "Mobile"})),
        ("phone,event_type,purposes,occurred_at,Notes,notes", ChannelConfig()),
    ],
)
def test_a_column_named_twice_refuses_the_file_whole(header, config):
    """The second `phone` column is another person's number: which one counts is not guessed."""
    data = (header + "\n+4915112345678,opt_out,marketing,2026-11-03T07:00:00Z,+4915112345679\n"
            "+4915112345670,opt_in,marketing,2026-11-03T07:00:00Z,+4915112345671\n").encode()
    read = read_csv(data, ctx(), config)
    assert read.table.height == 0 and len(read.rows) == 2
    assert all(r.error.startswith("file refused:") and "named twice" in r.error for r in read.rows)
    assert any("named twice" in n for n in read.notes)
    assert not any(ch.isdigit() for n in read.notes for ch in n.split("columns")[0])
    assert "4915112345679" in read.rows[0].raw  # the raw row keeps every cell (evidence)


@pytest.mark.parametrize(
    "first_row",
    [
        "+4915112345678,opt_out,marketing,2026-11-03T07:00:00Z",
        "+49 151 1234 5678,opt_out,marketing,2026-11-03T07:00:00Z",
        "phone,opt_out,marketing,2026-11-03T07:00:00Z,US.13491208655302741918",
        "01511234567,DE,x,y",
    ],
)
def test_a_first_row_of_data_refuses_the_file_and_no_note_quotes_it(first_row):
    data = (first_row + "\n+4915112345670,opt_in,marketing,2026-11-03T07:00:00Z\n").encode()
    read = read_csv(data, ctx(), ChannelConfig())
    assert read.table is None or read.table.height == 0
    assert read.rows and all(r.error.startswith("file refused:") for r in read.rows)
    assert read.rows[0].line == 1 and len(read.rows) == 2  # the first row is a row: quarantined, counted
    joined = " ".join(read.notes + [r.error for r in read.rows])
    for cell in first_row.split(","):
        assert cell not in joined or cell in ("phone", "x", "y", "DE")
    assert not any(run in joined for run in ("4915112345678", "1234 5678", "13491208655302741918", "1511234567"))


def test_unknown_column_names_are_noted_without_their_digits():
    data = b"phone,event_type,purposes,occurred_at,ref 4915112345678\n+4915112345670,opt_in,marketing,2026-11-03T07:00:00Z,a\n"
    read = read_csv(data, ctx(), ChannelConfig())
    assert read.table.height == 1
    assert any(n.startswith("unknown columns ignored") for n in read.notes)
    assert not any(NUMBER_DIGITS in n for n in read.notes)


# -- OS errors are per file; the exports folder is the boundary ----------------------------------


def test_listing_notes_symlinks_out_loops_special_files_and_unreadable_folders(tmp_path, monkeypatch):
    outside = write(tmp_path / "secret" / "hash_salt", "s3cr3t-salt\n")
    exports = tmp_path / "exports"
    write(exports / "web_form" / "a.csv", OPT_IN)
    (exports / "web_form" / "salt.csv").symlink_to(outside)
    (exports / "web_form" / "secrets").symlink_to(outside.parent, target_is_directory=True)
    (exports / "web_form" / "loop").symlink_to(exports / "web_form", target_is_directory=True)
    (exports / "web_form" / "self.csv").symlink_to(exports / "web_form" / "self.csv")
    (exports / "web_form" / "inside.csv").symlink_to(exports / "web_form" / "a.csv")
    os.mkfifo(exports / "web_form" / "pipe.csv")
    write(exports / "web_form" / "closed" / "b.csv", OPT_OUT)
    real_scandir = os.scandir
    closed = os.path.realpath(exports / "web_form" / "closed")

    def scandir(path="."):
        if os.path.realpath(path) == closed:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = list_exports(exports)
    assert [f.source_file for f in listing.files] == ["web_form/a.csv", "web_form/inside.csv"]
    unread = {name: note for _, name, note in listing.unread}
    assert "outside the exports folder" in unread["web_form/salt.csv"]
    assert "outside the exports folder" in unread["web_form/secrets"]
    assert "loop" in unread["web_form/self.csv"]
    assert "symlink loop" in unread["web_form/loop/"]
    assert "could not be listed (PermissionError)" in unread["web_form/closed/"]
    assert any(i.startswith("web_form/pipe.csv: not a regular file") for i in listing.ignored)
    assert "s3cr3t" not in json.dumps([listing.unread, listing.ignored])


def test_a_file_that_vanishes_after_listing_is_noted_and_the_rest_published(tmp_path, con, monkeypatch):
    import consent.reading.ingest as ingest

    exports = tmp_path / "exports"
    gone = write(exports / "preference_center" / "gone.csv", OPT_OUT)
    write(exports / "web_form" / "signups.csv", HEADER + "+4915112345670,,opt_in,marketing,2026-11-02T07:00:00Z\n")
    real_list = ingest.list_exports

    def list_then_delete(*args, **kwargs):
        listing = real_list(*args, **kwargs)
        gone.unlink()
        return listing

    monkeypatch.setattr(ingest, "list_exports", list_then_delete)
    night(exports, con, "r1")
    row = file_row(con, "preference_center/gone.csv")
    assert row["state"] == "unread" and "FileNotFoundError" in row["notes"][0]
    assert events_of(con, "+4915112345670") == 1


def test_a_night_with_an_unreadable_file_and_planted_symlinks_publishes_the_rest_and_alerts(
    exports, warehouse_path, tmp_path, monkeypatch, capsys
):
    """One file the run may not read (PermissionError, simulated), a header-less CSV, a CSV with
    a column named twice, and symlinks planted to files outside the exports folder: every other
    file is published, the run fails its `every_file_read` check and alerts, naming the files;
    no number, no salt and no /etc/passwd line appears in the output, the alert or the warehouse."""
    salt = write(tmp_path / "wh" / "hash_salt", "s3cr3t-salt\n")
    denied = exports / "preference_center" / "optouts.csv"
    (exports / "web_form" / "passwd.csv").symlink_to("/etc/passwd")
    (exports / "web_form" / "salt.csv").symlink_to(salt)
    write(exports / "email_link" / "no_header.csv", "+4915112345690,,opt_out,marketing,2026-11-03T07:00:00Z\n")
    write(exports / "email_link" / "twice.csv", "phone,event_type,purposes,occurred_at,phone\n"
          "+4915112345691,opt_out,marketing,2026-11-03T07:00:00Z,+4915112345692\n")
    with opens_of(monkeypatch, denied, deny(denied)):
        code = run_cli(exports, warehouse_path)
    out = capsys.readouterr()
    assert code == 1
    assert "preference_center/optouts.csv" in out.out and "PermissionError" in out.out
    assert "web_form/passwd.csv" in out.out and "outside the exports folder" in out.out
    assert "4915112345690" not in out.out + out.err and "s3cr3t" not in out.out + out.err
    # the rest of the night is published
    assert query(warehouse_path, "SELECT status FROM consent_status WHERE phone_e164 = '+447400123456'")
    assert not query(warehouse_path, "SELECT * FROM source_files WHERE source_file = 'preference_center/optouts.csv'")
    refused = query(warehouse_path, "SELECT source_file, count(*), min(reason) FROM quarantine "
                                    "WHERE source_file LIKE 'email_link/%' GROUP BY ALL ORDER BY ALL")
    assert [(f, n) for f, n, _ in refused] == [("email_link/no_header.csv", 1), ("email_link/twice.csv", 1)]
    assert all(r.startswith("file refused:") for _, _, r in refused)
    assert not query(warehouse_path, "SELECT * FROM consent_events WHERE phone_e164 IN ('+4915112345691', '+4915112345692', '+4915112345690')")
    (alert,) = sorted((warehouse_path.parent / "alerts").glob("*.json"))
    body = alert.read_text()
    assert "every_file_read" in body and "preference_center/optouts.csv" in body and "web_form/salt.csv" in body
    assert "4915112345690" not in body and "s3cr3t" not in body and "root:" not in body
    dump = json.dumps(query(warehouse_path, "SELECT raw_row, reason FROM quarantine")
                      + query(warehouse_path, "SELECT notes FROM source_files"), default=str)
    assert "s3cr3t" not in dump and "root:x:" not in dump
    # conservation holds for every file read
    assert not query(warehouse_path, "SELECT * FROM source_files WHERE rows_read <> events + quarantined + skipped")
    # the next night, readable again, the opt-out is published
    assert run_cli(exports, warehouse_path) == 1  # the planted symlinks are still there
    assert ("+4915112345678", "utility") in opted_out(warehouse_path)


def test_the_sensor_finds_files_by_the_staging_rule(tmp_path):
    from pipelines.sensors import export_fingerprints

    outside = write(tmp_path / "elsewhere" / "x.csv", OPT_OUT)
    exports = tmp_path / "exports"
    write(exports / "web_form" / "a.csv", OPT_IN)
    write(exports / "notices" / "n.md", "notice")
    write(exports / "web_form" / ".hidden.csv", OPT_IN)
    (exports / "web_form" / "planted.csv").symlink_to(outside)
    assert set(export_fingerprints(exports)) == {"web_form/a.csv", "notices/n.md"}
    assert {f.source_file for f in list_exports(exports).files} == {"web_form/a.csv"}


def test_a_notice_symlinked_from_outside_the_exports_folder_is_not_read(tmp_path):
    from consent.reading.notices import read_notices

    outside = write(tmp_path / "elsewhere" / "n.yaml", "notice_version: planted-v1\nbusiness: acme\n")
    exports = tmp_path / "exports"
    (exports / "notices").mkdir(parents=True)
    (exports / "notices" / "planted.yaml").symlink_to(outside)
    folder = read_notices(exports)
    assert folder.notices == []
    assert folder.refused == [("notices/planted.yaml", "symlink leads outside the exports folder: not followed")]
