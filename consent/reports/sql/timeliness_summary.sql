-- The dashboard's opt-out timeliness per business: backfilled opt-outs (loaded by the first run that
-- read their channel) are counted apart from late ones, and left out of the slowest figure.
SELECT
    business,
    count(*) AS opt_outs,
    count(*) FILTER (WHERE list_contains(findings, 'honoured')) AS honoured,
    count(*) FILTER (WHERE list_contains(findings, 'confirmation_message')) AS with_confirmation,
    count(*) FILTER (WHERE list_contains(findings, 'sent_after_opt_out')) AS sent_after_opt_out,
    count(*) FILTER (WHERE NOT list_contains(findings, 'late') AND NOT list_contains(findings, 'backfilled'))
        AS published_in_time,
    count(*) FILTER (WHERE list_contains(findings, 'late')) AS published_late,
    count(*) FILTER (WHERE list_contains(findings, 'backfilled')) AS backfilled,
    max(business_days_to_publish) FILTER (WHERE NOT list_contains(findings, 'backfilled')) AS slowest_business_days
FROM opt_out_timeliness
GROUP BY ALL
ORDER BY ALL
