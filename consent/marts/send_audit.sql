-- send_audit: every business-sent WhatsApp message checked against the recipient's consent for its category at send time.
-- finding: ok | sent_after_opt_out | sent_without_consent | not_checked (a category that is not a consent purpose).
WITH sends AS (
    SELECT
        message_id,
        recipient_e164,
        min(status_at) AS sent_at,
        any_value(pricing_category) FILTER (WHERE pricing_category IS NOT NULL) AS category,
        list(DISTINCT status ORDER BY status) AS statuses,
        bool_or(list_contains(error_codes, 131050)) AS refused_by_whatsapp
    FROM message_statuses
    GROUP BY ALL
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
        ON h.phone_e164 = s.recipient_e164
        AND h.purpose = s.category
        AND h.valid_from < s.sent_at  -- the status before the send (a 131050 failure is itself an opt-out)
        AND coalesce(h.valid_to, TIMESTAMP '9999-12-31') > s.sent_at
    LEFT JOIN purposes AS p ON p.purpose = s.category
),

final AS (
    SELECT
        salted_hash(recipient_e164) AS recipient_hash,
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
