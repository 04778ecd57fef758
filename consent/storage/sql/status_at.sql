-- status_at: each contact of $business with its status for $purpose at $at, as consent_status_history
-- holds it today (the interval with valid_from <= $at < valid_to), and what the pre-send gate's
-- time rules need: the consent's time, its evidence and the number's region
-- (consent.sending.lists.sendable_at, `consent export --at`). The BSUID is the one the contact last used.
SELECT
    h.phone_e164,
    coalesce(s.whatsapp_user_id, CASE WHEN NOT starts_with(h.contact_id, '+') THEN h.contact_id END) AS whatsapp_user_id,
    h.contact_id, h.status, h.valid_from AS status_since, h.consent_event_id, h.consent_at, e.phone_region
FROM consent_status_history AS h
LEFT JOIN consent_status AS s USING (business, contact_id, purpose)
LEFT JOIN consent_events AS e ON e.event_id = h.consent_event_id
WHERE h.business = $business AND h.purpose = $purpose
  AND h.valid_from <= $at AND coalesce(h.valid_to, TIMESTAMP '9999-12-31') > $at
ORDER BY h.contact_id;
