-- suppressed_events: keep erased identifiers out of the staged run (consent.privacy.erasure.suppress_staged).
-- Links and sends of erased identifiers are dropped (they are not consent); `suppressed`: the
-- staged events of an erased number or BSUID, unless the batch or the ledger holds an opt-in for
-- it dated after the erasure. The last statement counts them.
DELETE FROM staging.stg_identifier_links WHERE list_has_any(
    [salted_hash(phone_e164), salted_hash(whatsapp_user_id), salted_hash(parent_user_id), salted_hash(previous_user_id)],
    (SELECT list(phone_hash) FROM suppression_list));

DELETE FROM staging.stg_message_statuses WHERE list_has_any(
    [salted_hash(recipient_e164), salted_hash(recipient_user_id)], (SELECT list(phone_hash) FROM suppression_list));

-- Hashes first, then plain equi-joins (a join on an expression of both sides is a nested loop).
CREATE OR REPLACE TEMP TABLE suppressed AS
WITH hashed AS (
    SELECT *, salted_hash(phone_e164) AS phone_hash_, salted_hash(whatsapp_user_id) AS user_hash_
    FROM staging.stg_consent_events
), matched AS (
    SELECT h.*, p.erased_at FROM hashed AS h JOIN suppression_list AS p ON p.phone_hash = h.phone_hash_
    UNION ALL
    SELECT h.*, p.erased_at FROM hashed AS h JOIN suppression_list AS p ON p.phone_hash = h.user_hash_
)
SELECT DISTINCT s.event_id, s.channel, s.source_file, s.source_line, s.source_pointer, s.file_hash, s.ingested_at, s.run_id,
       s.business
FROM matched AS s
WHERE NOT EXISTS (
    SELECT 1 FROM (
        SELECT phone_e164, whatsapp_user_id, event_type, occurred_at FROM staging.stg_consent_events
        UNION ALL SELECT phone_e164, whatsapp_user_id, event_type, occurred_at FROM consent_events
    ) o
    WHERE (o.phone_e164 = s.phone_e164 OR o.whatsapp_user_id = s.whatsapp_user_id) AND o.event_type IN ('opt_in', 'opt_in_confirm')
      AND o.occurred_at > s.erased_at
) OR s.occurred_at IS NULL OR s.occurred_at <= s.erased_at;

SELECT count(*) FROM suppressed;
