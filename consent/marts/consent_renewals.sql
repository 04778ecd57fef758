-- consent_renewals: one row per opted-in contact and purpose whose consent lapses within the policy's renewal_notice_days (as of the last run): re-ask before it does.
WITH opted_in AS (
    SELECT s.business, s.contact_id, s.purpose, s.consent_at, s.channel, s.consent_method, e.phone_region
    -- only consents that can lapse within the notice period: a purpose with a validity (joined first:
    -- a policy without validities reads no status row), given at most the shortest validity before
    -- the last run's clock plus the notice period
    FROM (SELECT DISTINCT purpose FROM consent_validity) AS p
    JOIN consent_status AS s ON s.purpose = p.purpose
    LEFT JOIN consent_events AS e ON e.event_id = s.event_id
    WHERE s.status = 'opted_in'
      AND s.consent_at <= (SELECT max(as_of) FROM runs)
          + to_days(CAST(getvariable('renewal_notice_days') AS INTEGER))
          - to_days((SELECT min(CAST(days AS INTEGER)) FROM consent_validity))
),

valid AS (
    -- the validity for the purpose and the number's country, else the purpose's default
    SELECT o.*, coalesce(c.days, d.days) AS validity_days
    FROM opted_in AS o
    LEFT JOIN consent_validity AS c ON c.purpose = o.purpose AND c.region = o.phone_region
    LEFT JOIN consent_validity AS d ON d.purpose = o.purpose AND d.region IS NULL
),

final AS (
    SELECT
        business,
        salted_hash(contact_id) AS contact_hash,
        purpose,
        consent_at,
        channel,
        consent_method,
        consent_at + to_days(CAST(validity_days AS INTEGER)) AS expires_at,
        date_diff('day', (SELECT max(as_of) FROM runs), consent_at + to_days(CAST(validity_days AS INTEGER))) AS days_left
    FROM valid
    WHERE validity_days IS NOT NULL
)

SELECT * FROM final
WHERE expires_at - to_days(CAST(getvariable('renewal_notice_days') AS INTEGER)) <= (SELECT max(as_of) FROM runs)
ORDER BY expires_at, business, contact_hash, purpose
