-- send_macros: table macros defined on every warehouse connection that has the identity tables
-- (consent.storage.sql.use_salt), so the send audit, the opt-out audits and the timeliness mart match a
-- message to its recipient in one way.

-- The number each BSUID was most recently linked to, per business.
CREATE OR REPLACE TEMP MACRO linked_numbers() AS TABLE
SELECT business, whatsapp_user_id, arg_max(phone_e164, (linked_at, phone_e164)) AS phone
FROM identifier_links
WHERE phone_e164 IS NOT NULL AND whatsapp_user_id IS NOT NULL
GROUP BY ALL;

-- One row per business-sent message (from status webhooks): its recipient as a contact id (the
-- number, else the number its BSUID is linked to, else the BSUID), first status time, category;
-- from the status rows of the table named (`message_statuses`, or the statuses of some messages
-- only: every status row of each message, so that the row is the same). Should a message's status
-- rows disagree (two recipients, two categories), the earliest status row that names one decides,
-- ties by the smaller value: the same row whatever order the rows are read in (arg_min skips NULLs).
CREATE OR REPLACE TEMP MACRO sends_from(statuses) AS TABLE
SELECT
    m.message_id,
    m.business,
    coalesce(
        arg_min(m.recipient_e164, (m.status_at, m.recipient_e164)),
        arg_min(l.phone, (m.status_at, l.phone)),
        arg_min(m.recipient_user_id, (m.status_at, m.recipient_user_id))
    ) AS recipient,
    min(m.status_at) AS sent_at,
    arg_min(m.pricing_category, (m.status_at, m.pricing_category)) AS category,
    list(DISTINCT m.status ORDER BY m.status) AS statuses,
    bool_or(list_contains(m.error_codes, 131050)) AS refused_by_whatsapp
FROM query_table(statuses) AS m
LEFT JOIN linked_numbers() AS l ON l.business = m.business AND l.whatsapp_user_id = m.recipient_user_id
GROUP BY m.message_id, m.business;

-- Every business-sent message.
CREATE OR REPLACE TEMP MACRO business_sends() AS TABLE SELECT * FROM sends_from('message_statuses');
