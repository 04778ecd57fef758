-- The latest 25 findings per business: messages sent without consent or after an opt-out.
SELECT
    business,
    sent_at,
    category,
    recipient_hash,
    status_at_send,
    finding,
    array_to_string(statuses, ', ') AS statuses
FROM send_audit
WHERE finding IN ('sent_without_consent', 'sent_after_opt_out')
QUALIFY row_number() OVER (PARTITION BY business ORDER BY sent_at DESC, message_id) <= 25
ORDER BY sent_at DESC, message_id
