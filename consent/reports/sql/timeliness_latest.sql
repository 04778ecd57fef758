-- The latest 25 opt-outs per business that were late, breached (a send after them) or backfilled.
SELECT
    business,
    asked_at,
    published_at,
    business_days_to_publish,
    channel,
    CASE
        WHEN list_contains(findings, 'backfilled') THEN 'backfilled'
        WHEN list_contains(findings, 'late') THEN 'late'
        ELSE 'in time'
    END AS published,
    contact_hash,
    array_to_string(findings, ', ') AS findings
FROM opt_out_timeliness
WHERE list_contains(findings, 'late') OR list_contains(findings, 'sent_after_opt_out')
   OR list_contains(findings, 'backfilled')
QUALIFY row_number() OVER (PARTITION BY business ORDER BY asked_at DESC, contact_hash) <= 25
ORDER BY asked_at DESC, contact_hash
