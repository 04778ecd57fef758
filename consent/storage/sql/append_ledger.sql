-- append_ledger: the staged run joins the append-only ledger, the quarantine, the skipped items
-- and the message statuses. Re-ingested rows add nothing (their ids are already there).
-- None of the four tables has a primary-key index: each statement adds only ids the table does
-- not hold, and the ERROR check `ledger_rows_are_well_formed` fails a run that leaves one twice.
--
-- One row per new id: the first staged (for events: by file, line, pointer). The ids staged more
-- than once are found by a count alone, and only their rows are ranked (`twice`); the insert then
-- leaves out the rows ranked after the first. Ranking every staged row by its id in the statement
-- that inserts ran out of memory under a 1GB DuckDB limit at 10M events (docs/performance.md); a
-- count spills.

INSERT INTO consent_events BY NAME
WITH twice AS MATERIALIZED (
    SELECT event_id, arg_min(rowid, (source_file, source_line, source_pointer)) AS kept
    FROM staging.stg_consent_events
    WHERE event_id IN (SELECT event_id FROM staging.stg_consent_events GROUP BY event_id HAVING count(*) > 1)
    GROUP BY event_id
)
SELECT s.* FROM staging.stg_consent_events AS s ANTI JOIN consent_events USING (event_id)
WHERE s.rowid NOT IN (
    SELECT d.rowid FROM staging.stg_consent_events AS d JOIN twice USING (event_id) WHERE d.rowid <> twice.kept
);

-- The quarantine, the skipped items and the message statuses have no primary-key index either
-- (schema version 9): the same, per quarantine id, skipped id, and message and status.
INSERT INTO quarantine BY NAME
WITH twice AS MATERIALIZED (
    SELECT quarantine_id, min(rowid) AS kept
    FROM staging.stg_quarantine
    WHERE quarantine_id IN (SELECT quarantine_id FROM staging.stg_quarantine GROUP BY quarantine_id HAVING count(*) > 1)
    GROUP BY quarantine_id
)
SELECT s.* FROM staging.stg_quarantine AS s ANTI JOIN quarantine USING (quarantine_id)
WHERE s.rowid NOT IN (
    SELECT d.rowid FROM staging.stg_quarantine AS d JOIN twice USING (quarantine_id) WHERE d.rowid <> twice.kept
);

INSERT INTO skipped_items BY NAME
WITH twice AS MATERIALIZED (
    SELECT skipped_id, min(rowid) AS kept
    FROM staging.stg_skipped
    WHERE skipped_id IN (SELECT skipped_id FROM staging.stg_skipped GROUP BY skipped_id HAVING count(*) > 1)
    GROUP BY skipped_id
)
SELECT s.* FROM staging.stg_skipped AS s ANTI JOIN skipped_items USING (skipped_id)
WHERE s.rowid NOT IN (
    SELECT d.rowid FROM staging.stg_skipped AS d JOIN twice USING (skipped_id) WHERE d.rowid <> twice.kept
);

INSERT INTO message_statuses BY NAME
WITH twice AS MATERIALIZED (
    SELECT message_id, status, arg_min(rowid, (source_file, source_line)) AS kept
    FROM staging.stg_message_statuses
    WHERE (message_id, status) IN (
        SELECT (message_id, status) FROM staging.stg_message_statuses GROUP BY message_id, status HAVING count(*) > 1
    )
    GROUP BY message_id, status
)
SELECT s.* FROM staging.stg_message_statuses AS s ANTI JOIN message_statuses USING (message_id, status)
WHERE s.rowid NOT IN (
    SELECT d.rowid FROM staging.stg_message_statuses AS d JOIN twice USING (message_id, status) WHERE d.rowid <> twice.kept
);
