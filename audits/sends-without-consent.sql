-- sends-without-consent: messages sent to someone without consent for their category, or after an opt-out
SELECT sent_at, category, recipient_hash, status_at_send, finding, statuses, message_id
FROM send_audit
WHERE finding IN ('sent_without_consent', 'sent_after_opt_out')
ORDER BY sent_at
