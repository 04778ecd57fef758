-- The identifier (a number or a BSUID) whose salted hash is $hash, as the marts and the dashboard show
-- it (`contact_hash`, `recipient_hash`): every identifier the warehouse holds is a candidate, so a
-- hash from a send to someone who never consented is found too. Read by
-- `consent audit evidence --hash`, which never prints it.
WITH candidates AS (
    SELECT contact_id AS id FROM consent_status
    UNION SELECT phone_e164 FROM consent_events
    UNION SELECT whatsapp_user_id FROM consent_events
    UNION SELECT recipient_e164 FROM message_statuses
    UNION SELECT recipient_user_id FROM message_statuses
    UNION SELECT phone_e164 FROM identifier_links
    UNION SELECT whatsapp_user_id FROM identifier_links
)

SELECT id FROM candidates
WHERE id IS NOT NULL AND salted_hash(id) = $hash
ORDER BY id
