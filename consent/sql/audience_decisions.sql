-- audience_decisions: for each audience row (registered as `audience`: row_number, phone_given,
-- phone_raw, phone_e164, user_id, user_invalid), the contact it names in $business and that
-- contact's status for $purpose at $at (consent_status_history), with what a decision needs.
WITH linked AS (
    -- a BSUID names the number it was most recently linked to in this business
    SELECT whatsapp_user_id AS user_id, phone FROM linked_numbers() WHERE business = $business
),

resolved AS (
    -- hashes computed here, so the suppression joins below are plain equi-joins (hash joins)
    SELECT a.*, coalesce(a.phone_e164, l.phone, a.user_id) AS contact_id,
           salted_hash(a.phone_e164) AS phone_hash, salted_hash(a.user_id) AS user_hash
    FROM audience AS a
    LEFT JOIN linked AS l ON l.user_id = a.user_id
),

at_time AS (
    SELECT contact_id, status, valid_from, consent_at, consent_event_id,
           coalesce(consent_event_id, decided_by_event_id) AS evidence_event_id
    FROM consent_status_history
    WHERE business = $business AND purpose = $purpose
      AND valid_from <= $at AND coalesce(valid_to, TIMESTAMP '9999-12-31') > $at
),

known AS (
    -- contacts the business knew at $at (a purpose never decided for them is `no_consent`, not unknown)
    SELECT contact_id FROM consent_status_history WHERE business = $business AND valid_from <= $at
    UNION
    SELECT contact_id FROM consent_status
    WHERE business = $business AND purpose = $purpose AND (status_since IS NULL OR status_since <= $at)
)

SELECT
    r.row_number, r.phone_given, r.phone_raw, r.phone_e164, r.user_id, r.user_invalid,
    h.status, h.valid_from AS status_since, h.evidence_event_id, h.consent_at,
    e.phone_region,
    (s1.phone_hash IS NOT NULL OR s2.phone_hash IS NOT NULL) AS erased,
    -- the BSUID's own contact (an opt-out kept against it before any link) also counts
    CASE WHEN r.user_id IS DISTINCT FROM r.contact_id THEN b.status END AS user_status,
    k.contact_id IS NOT NULL AS known
FROM resolved AS r
LEFT JOIN at_time AS h ON h.contact_id = r.contact_id
LEFT JOIN consent_events AS e ON e.event_id = h.consent_event_id
LEFT JOIN suppression_list AS s1 ON s1.phone_hash = r.phone_hash
LEFT JOIN suppression_list AS s2 ON s2.phone_hash = r.user_hash
LEFT JOIN at_time AS b ON b.contact_id = r.user_id
LEFT JOIN known AS k ON k.contact_id = r.contact_id;
