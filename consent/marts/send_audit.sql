-- send_audit: every business-sent WhatsApp message checked against the recipient's consent for its category at send time.
-- finding: ok | sent_after_opt_out | sent_without_consent | not_checked (a category that is not a consent purpose).
-- The recipient is matched by number, or by BSUID (`recipient_user_id`) through the number it is linked to.
WITH linked AS (
    SELECT business, whatsapp_user_id, arg_max(phone_e164, (linked_at, phone_e164)) AS phone
    FROM identifier_links
    WHERE phone_e164 IS NOT NULL AND whatsapp_user_id IS NOT NULL
    GROUP BY ALL
),

sends AS (
    SELECT
        m.message_id,
        m.business,
        coalesce(any_value(m.recipient_e164), any_value(l.phone), any_value(m.recipient_user_id)) AS recipient,
        min(m.status_at) AS sent_at,
        any_value(m.pricing_category) FILTER (WHERE m.pricing_category IS NOT NULL) AS category,
        list(DISTINCT m.status ORDER BY m.status) AS statuses,
        bool_or(list_contains(m.error_codes, 131050)) AS refused_by_whatsapp
    FROM message_statuses AS m
    LEFT JOIN linked AS l ON l.business = m.business AND l.whatsapp_user_id = m.recipient_user_id
    GROUP BY m.message_id, m.business
),

purposes AS (
    SELECT DISTINCT purpose FROM consent_status
),

checked AS (
    SELECT
        s.*,
        h.status AS status_at_send,
        p.purpose IS NOT NULL AS is_purpose
    FROM sends AS s
    LEFT JOIN consent_status_history AS h
        ON h.business = s.business
        AND h.contact_id = s.recipient
        AND h.purpose = s.category
        AND h.valid_from < s.sent_at  -- the status before the send (a 131050 failure is itself an opt-out)
        AND coalesce(h.valid_to, TIMESTAMP '9999-12-31') > s.sent_at
    LEFT JOIN purposes AS p ON p.purpose = s.category
),

final AS (
    SELECT
        business,
        salted_hash(recipient) AS recipient_hash,
        message_id,
        sent_at,
        category,
        statuses,
        refused_by_whatsapp,
        coalesce(status_at_send, 'no_consent') AS status_at_send,
        CASE
            WHEN NOT is_purpose THEN 'not_checked'
            WHEN status_at_send = 'opted_in' THEN 'ok'
            WHEN status_at_send = 'opted_out' THEN 'sent_after_opt_out'
            ELSE 'sent_without_consent'
        END AS finding
    FROM checked
)

SELECT * FROM final ORDER BY sent_at, message_id
