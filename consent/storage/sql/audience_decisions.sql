-- audience_decisions: for each audience row (registered as `audience`: row_number, phone_given,
-- phone_raw, phone_e164, user_id, user_invalid), the contacts it names in $business and each
-- contact's status for $purpose at $at (consent_status_history), with what a decision needs: the
-- row's contact (its number, else the number its BSUID is linked to, else the BSUID), and, when
-- the row also names a BSUID that is not linked to that number, the BSUID's contact (`u_` columns).
WITH linked AS (
    -- a BSUID names the number it was most recently linked to in this business
    SELECT whatsapp_user_id AS user_id, phone FROM linked_numbers() WHERE business = $business
),

resolved AS (
    -- hashes computed here, so the suppression joins below are plain equi-joins (hash joins)
    SELECT a.*, coalesce(a.phone_e164, l.phone, a.user_id) AS contact_id,
           CASE WHEN a.phone_e164 IS NOT NULL AND a.user_id IS NOT NULL
                 AND coalesce(l.phone, a.user_id) <> a.phone_e164 THEN coalesce(l.phone, a.user_id) END AS user_contact_id,
           salted_hash(a.phone_e164) AS phone_hash, salted_hash(a.user_id) AS user_hash
    FROM audience AS a
    LEFT JOIN linked AS l ON l.user_id = a.user_id
),

at_time AS (
    SELECT h.contact_id, h.status, h.valid_from, h.consent_at, h.consent_event_id,
           coalesce(h.consent_event_id, h.decided_by_event_id) AS evidence_event_id, e.phone_region
    FROM consent_status_history AS h
    LEFT JOIN consent_events AS e ON e.event_id = h.consent_event_id
    WHERE h.business = $business AND h.purpose = $purpose
      AND h.valid_from <= $at AND coalesce(h.valid_to, TIMESTAMP '9999-12-31') > $at
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
    h.status, h.valid_from AS status_since, h.evidence_event_id, h.consent_event_id, h.consent_at, h.phone_region,
    (s1.phone_hash IS NOT NULL OR s2.phone_hash IS NOT NULL) AS erased,
    k.contact_id IS NOT NULL AS known,
    r.user_contact_id IS NOT NULL AS u_named,
    u.status AS u_status, u.valid_from AS u_status_since, u.evidence_event_id AS u_evidence_event_id,
    u.consent_event_id AS u_consent_event_id,
    u.consent_at AS u_consent_at, u.phone_region AS u_phone_region,
    ku.contact_id IS NOT NULL AS u_known,
    -- the BSUID's own contact (an opt-out kept against it before any link) also counts
    CASE WHEN r.user_id NOT IN (r.contact_id, coalesce(r.user_contact_id, '')) THEN b.status END AS user_own_status
FROM resolved AS r
LEFT JOIN at_time AS h ON h.contact_id = r.contact_id
LEFT JOIN suppression_list AS s1 ON s1.phone_hash = r.phone_hash
LEFT JOIN suppression_list AS s2 ON s2.phone_hash = r.user_hash
LEFT JOIN known AS k ON k.contact_id = r.contact_id
LEFT JOIN at_time AS u ON u.contact_id = r.user_contact_id
LEFT JOIN known AS ku ON ku.contact_id = r.user_contact_id
LEFT JOIN at_time AS b ON b.contact_id = r.user_id;
