-- append_ledger: the staged run joins the append-only ledger, the quarantine, the skipped items
-- and the message statuses. Re-ingested rows add nothing (their ids are already there).
-- None of the four tables has a primary-key index: each statement adds only ids the table does
-- not hold, and the ERROR check `ledger_rows_are_well_formed` fails a run that leaves one twice.

-- One row per new event id: the first by file, line, pointer (an aggregate of row ids,
-- not a window sorting whole rows: ~2 s less at 1M events).
INSERT INTO consent_events BY NAME
SELECT s.* FROM stg_consent_events AS s
WHERE s.rowid IN (
    SELECT arg_min(rowid, (source_file, source_line, source_pointer))
    FROM stg_consent_events ANTI JOIN consent_events USING (event_id)
    GROUP BY event_id
);

-- The quarantine, the skipped items and the message statuses have no primary-key index either
-- (schema version 9): one row per id (per message and status) that the table does not hold yet,
-- the first staged.
INSERT INTO quarantine BY NAME
SELECT s.* FROM stg_quarantine AS s
WHERE s.rowid IN (
    SELECT min(rowid) FROM stg_quarantine ANTI JOIN quarantine USING (quarantine_id) GROUP BY quarantine_id
);

INSERT INTO skipped_items BY NAME
SELECT s.* FROM stg_skipped AS s
WHERE s.rowid IN (
    SELECT min(rowid) FROM stg_skipped ANTI JOIN skipped_items USING (skipped_id) GROUP BY skipped_id
);

INSERT INTO message_statuses BY NAME
SELECT s.* FROM stg_message_statuses AS s
WHERE s.rowid IN (
    SELECT arg_min(rowid, (source_file, source_line))
    FROM stg_message_statuses ANTI JOIN message_statuses USING (message_id, status)
    GROUP BY message_id, status
);
