-- Opt-outs per business, channel and how they were published: in time, late, or backfilled.
SELECT
    business,
    channel,
    CASE
        WHEN list_contains(findings, 'backfilled') THEN 'backfilled'
        WHEN list_contains(findings, 'late') THEN 'late'
        ELSE 'in time'
    END AS published,
    count(*) AS opt_outs
FROM opt_out_timeliness
GROUP BY ALL
ORDER BY channel, published, business
