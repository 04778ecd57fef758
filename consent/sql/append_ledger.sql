-- append_ledger: the staged run joins the append-only ledger, the quarantine, the skipped items
-- and the message statuses. Re-ingested rows add nothing (their ids are already there).

-- One row per new event id: the first by file, line, pointer (an aggregate of row ids,
-- not a window sorting whole rows: ~2 s less at 1M events).
INSERT INTO consent_events BY NAME
SELECT s.* FROM stg_consent_events AS s
WHERE s.rowid IN (
    SELECT arg_min(rowid, (source_file, source_line, source_pointer))
    FROM stg_consent_events ANTI JOIN consent_events USING (event_id)
    GROUP BY event_id
);

INSERT OR IGNORE INTO quarantine BY NAME SELECT * FROM stg_quarantine;

INSERT OR IGNORE INTO skipped_items BY NAME SELECT * FROM stg_skipped;

INSERT OR IGNORE INTO message_statuses BY NAME
SELECT * EXCLUDE (rank) FROM (
    SELECT *, row_number() OVER (PARTITION BY message_id, status ORDER BY source_file, source_line) AS rank
    FROM stg_message_statuses
)
WHERE rank = 1;
