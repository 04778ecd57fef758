-- opt-outs-honoured: every opt-out and the first message of that category sent after it (honoured when there is none)
WITH opt_outs AS (
    SELECT phone_e164, purpose, valid_from AS opted_out_at, valid_to
    FROM consent_status_history
    WHERE status = 'opted_out'
),

sends AS (
    SELECT
        message_id,
        recipient_e164,
        min(status_at) AS sent_at,
        any_value(pricing_category) FILTER (WHERE pricing_category IS NOT NULL) AS category
    FROM message_statuses
    GROUP BY ALL
),

first_after AS (
    SELECT
        o.phone_e164,
        o.purpose,
        o.opted_out_at,
        min(s.sent_at) AS first_message_at,
        arg_min(s.message_id, s.sent_at) AS first_message_id
    FROM opt_outs AS o
    LEFT JOIN sends AS s
        ON s.recipient_e164 = o.phone_e164
        AND s.category = o.purpose
        AND s.sent_at > o.opted_out_at
        AND s.sent_at < coalesce(o.valid_to, TIMESTAMP '9999-12-31')
    GROUP BY ALL
)

SELECT
    salted_hash(phone_e164) AS contact_hash,
    purpose,
    opted_out_at,
    first_message_at,
    first_message_id,
    first_message_at IS NULL AS honoured
FROM first_after
ORDER BY opted_out_at, contact_hash, purpose
