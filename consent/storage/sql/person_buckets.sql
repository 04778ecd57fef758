-- person_buckets: every identifier of the ledger and the links (numbers, BSUIDs, parent BSUIDs)
-- with the person it belongs to and that person's bucket. A person is a connected component of
-- the identifiers that a link or an event shows together (a number and its BSUID, a BSUID and its
-- parent or the BSUID it replaced, an old number and the new one of a number change), named by its
-- smallest identifier; its bucket is a stable hash of that name (md5, not DuckDB's `hash`, which
-- may change between versions), so one person's whole history is decided in one bucket.
-- Components are found by label propagation: each identifier takes the smallest label among its
-- neighbours until none changes (person_buckets_step.sql, repeated by consent.run.buckets).

CREATE OR REPLACE TEMP TABLE person_edges AS
WITH pairs (a, b) AS (
    SELECT phone_e164, whatsapp_user_id FROM identifier_links
    UNION ALL SELECT phone_e164, parent_user_id FROM identifier_links
    UNION ALL SELECT whatsapp_user_id, parent_user_id FROM identifier_links
    UNION ALL SELECT whatsapp_user_id, previous_user_id FROM identifier_links
    UNION ALL SELECT phone_e164, whatsapp_user_id FROM consent_events
    UNION ALL SELECT phone_e164, parent_user_id FROM consent_events
    UNION ALL SELECT whatsapp_user_id, parent_user_id FROM consent_events
    UNION ALL SELECT phone_e164, changed_to FROM consent_events WHERE event_type = 'number_change'
)
SELECT DISTINCT a, b FROM (SELECT a, b FROM pairs UNION ALL SELECT b, a FROM pairs)
WHERE a IS NOT NULL AND b IS NOT NULL AND a <> b;

CREATE OR REPLACE TEMP TABLE person_labels AS
SELECT identifier, identifier AS person
FROM (
    SELECT a AS identifier FROM person_edges
    UNION SELECT phone_e164 FROM consent_events WHERE phone_e164 IS NOT NULL
    UNION SELECT whatsapp_user_id FROM consent_events WHERE whatsapp_user_id IS NOT NULL
    UNION SELECT parent_user_id FROM consent_events WHERE parent_user_id IS NOT NULL
);
