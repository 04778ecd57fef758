-- opt-outs-honoured: every opt-out and the first message of that category the same business sent after it (honoured when there is none)
WITH opt_outs AS (
    SELECT business, contact_id, purpose, valid_from AS opted_out_at, valid_to
    FROM consent_status_history
    WHERE status = 'opted_out'
),

-- a message's recipient: its number, or the number its BSUID is linked to, or the BSUID
sends AS (
    SELECT * FROM business_sends()
),

first_after AS (
    SELECT
        o.business,
        o.contact_id,
        o.purpose,
        o.opted_out_at,
        min(s.sent_at) AS first_message_at,
        arg_min(s.message_id, s.sent_at) AS first_message_id
    FROM opt_outs AS o
    LEFT JOIN sends AS s
        ON s.business = o.business
        AND s.recipient = o.contact_id
        AND s.category = o.purpose
        AND s.sent_at > o.opted_out_at
        AND s.sent_at < coalesce(o.valid_to, TIMESTAMP '9999-12-31')
    GROUP BY ALL
)

SELECT
    business,
    salted_hash(contact_id) AS contact_hash,
    purpose,
    opted_out_at,
    first_message_at,
    first_message_id,
    first_message_at IS NULL AS honoured
FROM first_after
ORDER BY opted_out_at, business, contact_hash, purpose
