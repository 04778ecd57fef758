-- suppression_at: the contacts of $business opted out at $at (of $purpose, or of any purpose when
-- $purpose is null), as consent_status_history holds it today, with the columns of today's
-- suppression list (`consent export --suppression --at`); time alone never ends an opt-out.
SELECT
    h.phone_e164,
    coalesce(s.whatsapp_user_id, CASE WHEN NOT starts_with(h.contact_id, '+') THEN h.contact_id END) AS whatsapp_user_id,
    h.business, h.purpose, h.valid_from AS opted_out_at, h.decided_by_channel AS opt_out_channel
FROM consent_status_history AS h
LEFT JOIN consent_status AS s USING (business, contact_id, purpose)
WHERE h.business = $business AND h.status = 'opted_out' AND ($purpose IS NULL OR h.purpose = $purpose)
  AND h.valid_from <= $at AND coalesce(h.valid_to, TIMESTAMP '9999-12-31') > $at
ORDER BY ALL;
