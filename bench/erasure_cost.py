"""What keeping erased numbers out costs: the raw-row match of a night and the free-text sweep of
an erasure, on synthetic rows in memory.

    .venv/bin/python bench/erasure_cost.py --rows 200000

With 1,000 numbers on the suppression list: `erase_staged_raw_rows` over ROWS staged skipped
webhook items (delivery statuses, each with a timestamp, a recipient wa_id and the business's
numbers), then `scrub_free_text` over a ledger of ROWS events (what `consent erase` sweeps).
"""

from __future__ import annotations

import argparse
import time

import duckdb

from consent.storage import sql
from consent.storage.migrations import ensure_schema
from consent.privacy.erasure import erase_staged_raw_rows, number_digits, scrub_free_text
from consent.run.staging import begin_staging

SALT = "s" * 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    rows = parser.parse_args().rows
    con = duckdb.connect()
    ensure_schema(con)
    begin_staging(con)
    sql.use_salt(con, SALT)
    for i in range(1000):
        number = f"+49151{1_000_000 + i * 7919:08d}"
        con.execute("INSERT INTO suppression_list VALUES (salted_hash(?), now()::TIMESTAMP, 'bench', salted_hash(?))",
                    [number, number_digits(number)])
    con.execute(f"""
        INSERT INTO staging.stg_skipped BY NAME
        SELECT 'id' || i AS skipped_id, 'whatsapp' AS channel, 'whatsapp/f.jsonl' AS source_file, i AS source_line,
               'h' AS file_hash, 'status read' AS reason, now()::TIMESTAMP AS ingested_at, 'r' AS run_id,
               '{{"id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QjA2NkIzNTRFQTNDQ0RBMkUA", "status": "read", "timestamp": "'
               || (1793696500 + i) || '", "recipient_id": "49170' || lpad((i * 13)::VARCHAR, 8, '0')
               || '", "metadata": {{"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}}}}' AS raw_row
        FROM range({rows}) t(i)""")
    started = time.perf_counter()
    erase_staged_raw_rows(con)
    print(f"erase_staged_raw_rows, {rows:,} skipped webhook items: {time.perf_counter() - started:.2f} s")
    con.execute(f"""
        INSERT INTO consent_events BY NAME
        SELECT 'e' || i AS event_id, '+49170' || lpad(i::VARCHAR, 8, '0') AS phone_e164,
               '0170 ' || lpad(i::VARCHAR, 8, '0') AS phone_raw, 'opt_in' AS event_type, ['marketing'] AS purposes,
               now()::TIMESTAMP AS occurred_at, 'web_form' AS channel, 'checkbox' AS consent_method,
               'web-v3' AS notice_version, 'form-' || i AS evidence_ref, 'web_form/a.csv' AS source_file,
               i AS source_line, 'h' AS file_hash, now()::TIMESTAMP AS ingested_at, 'r' AS run_id, 'default' AS business
        FROM range({rows}) t(i)""")
    started = time.perf_counter()
    scrub_free_text(con, ["15112345678"], ["DE.13491208655302741918"])
    print(f"scrub_free_text, {rows:,} events in the ledger: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
