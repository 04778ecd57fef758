-- send_audit: every business-sent WhatsApp message checked against the recipient's consent for its category at send time.
-- finding: ok | sent_after_opt_out | sent_without_consent | not_checked (a category that is not a consent purpose).
-- The recipient is matched by number, or by BSUID (`recipient_user_id`) through the number it is
-- linked to (the `business_sends()` macro, consent/storage/sql/send_macros.sql).
WITH sends AS (
    -- every message sent (`mart_sends`); on an incremental build, the messages the run changed, of
    -- those sent to the contacts in scope (consent/storage/sql/mart_scope.sql)
    SELECT * FROM mart_sends
    WHERE NOT getvariable('mart_scoped') OR message_id IN (SELECT message_id FROM mart_messages)
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
    -- (`mart_history`: the whole history, or on an incremental build the recipients' history)
    LEFT JOIN mart_history AS h
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
