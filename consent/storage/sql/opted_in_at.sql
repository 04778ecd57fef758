-- opted_in_at: the contacts of $business opted in to $purpose at $at, with their consent
-- (consent.sending.gate.renewals_due and `consent renewals`).
SELECT h.phone_e164, s.whatsapp_user_id, h.consent_at, h.consent_channel, h.consent_method, e.phone_region
FROM consent_status_history AS h
LEFT JOIN consent_status AS s USING (business, contact_id, purpose)
LEFT JOIN consent_events AS e ON e.event_id = h.consent_event_id
WHERE h.business = $business AND h.purpose = $purpose AND h.status = 'opted_in'
  AND h.valid_from <= $at AND coalesce(h.valid_to, TIMESTAMP '9999-12-31') > $at
ORDER BY h.consent_at, h.contact_id;
