-- Schema version 4: send_checks and send_check_rows, the log of pre-send audience checks.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

CREATE TABLE IF NOT EXISTS send_checks (
    check_id VARCHAR NOT NULL, audience_file VARCHAR NOT NULL, audience_hash VARCHAR NOT NULL,
    purpose VARCHAR NOT NULL, business VARCHAR NOT NULL, status_at TIMESTAMP NOT NULL,
    checked_at TIMESTAMP NOT NULL, rows_checked BIGINT NOT NULL, sendable BIGINT NOT NULL,
    blocked BIGINT NOT NULL, reasons JSON, run_id VARCHAR, PRIMARY KEY (check_id));
CREATE TABLE IF NOT EXISTS send_check_rows (
    check_id VARCHAR NOT NULL, row_number BIGINT NOT NULL, recipient_hash VARCHAR,
    decision VARCHAR NOT NULL, reason VARCHAR NOT NULL, PRIMARY KEY (check_id, row_number));
