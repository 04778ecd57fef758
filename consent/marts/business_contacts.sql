-- business_contacts: per business: its contacts (a number, or a BSUID alone), those known by BSUID only, the sendable contact-purposes, and the contacts opted out of any purpose (the dashboard's headline figures).
-- Whole: from every status. Incremental (`mart_scoped`, consent/storage/sql/mart_scope.sql): by difference, the
-- mart as it was (`business_contacts_before`) plus the touched contacts as the run decided them
-- (`mart_decided_status`) less as they were (`mart_replaced_status`): every status row of each, as a
-- contact's figures depend on all its rows.
WITH statuses AS (
    SELECT 1 AS sign, * FROM consent_status
    WHERE NOT getvariable('mart_scoped')
    UNION ALL
    SELECT 1, * FROM mart_decided_status
    WHERE getvariable('mart_scoped')
    UNION ALL
    SELECT -1, * FROM mart_replaced_status
    WHERE getvariable('mart_scoped')
),

per_contact AS (
    SELECT
        sign,
        business,
        contact_id,
        bool_or(phone_e164 IS NULL) AS bsuid_only,
        count(*) FILTER (WHERE sendable) AS sendable,
        bool_or(status = 'opted_out') AS opted_out
    FROM statuses
    GROUP BY sign, business, contact_id
),

counted AS (
    SELECT
        business,
        sum(sign) AS contacts,
        coalesce(sum(sign) FILTER (WHERE bsuid_only), 0) AS known_by_bsuid_only,
        sum(sign * sendable) AS sendable_contact_purposes,
        coalesce(sum(sign) FILTER (WHERE opted_out), 0) AS opted_out
    FROM per_contact
    GROUP BY business
),

totals AS (
    SELECT * FROM counted
    WHERE NOT getvariable('mart_scoped')
    UNION ALL
    -- the mart as it was plus the changes
    SELECT business, sum(contacts), sum(known_by_bsuid_only), sum(sendable_contact_purposes), sum(opted_out)
    FROM (SELECT * FROM business_contacts_before UNION ALL SELECT * FROM counted)
    WHERE getvariable('mart_scoped')
    GROUP BY business
)

-- (sums are HUGEINT in DuckDB: the counts stay BIGINT)
SELECT business, COLUMNS(* EXCLUDE (business))::BIGINT
FROM totals
WHERE contacts > 0
ORDER BY business
