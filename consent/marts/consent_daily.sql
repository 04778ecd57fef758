-- consent_daily: per day, business, channel and purpose: opt-ins, opt-outs, confirmations, net change, sendable audience.
-- Built from consent_status_history, so a day's figures are what the rules decided, not raw event counts.
-- Whole: from every history row. Incremental (`mart_scoped`, consent/storage/sql/mart_scope.sql): by difference,
-- the mart's rows from the first day to rebuild (`consent_daily_before`, kept before they are deleted)
-- plus the history rows the run wrote less those it replaced (`mart_history_delta`, a sign each), so
-- the cost follows the rows the run changed, not the history's length.
WITH transitions AS (
    SELECT
        h.business,
        h.purpose,
        h.status,
        h.valid_from,
        h.valid_to,
        h.consent_method,
        -- the channels of the deciding and the consent event, kept on the row when it was decided
        coalesce(h.decided_by_channel, 'unknown') AS decided_channel,
        coalesce(h.consent_channel, h.decided_by_channel, 'unknown') AS consent_channel
    FROM consent_status_history AS h
    WHERE NOT getvariable('mart_scoped')
),

changes AS (
    SELECT
        CAST(valid_from AS DATE) AS day,
        business,
        decided_channel AS channel,
        purpose,
        count(*) FILTER (WHERE status = 'opted_in') AS opt_ins,
        count(*) FILTER (WHERE status = 'opted_out') AS opt_outs,
        count(*) FILTER (WHERE status = 'opted_in' AND consent_method = 'double_opt_in') AS confirmations
    FROM transitions
    GROUP BY ALL
),

days AS (
    SELECT CAST(range AS DATE) AS day
    FROM range(
        (SELECT coalesce(min(CAST(valid_from AS DATE)), current_date) FROM consent_status_history),
        (SELECT coalesce(max(as_of), current_date)::DATE FROM runs) + INTERVAL 1 DAY,
        INTERVAL 1 DAY
    )
    WHERE NOT getvariable('mart_scoped') OR CAST(range AS DATE) >= getvariable('mart_since')
),

audience AS (
    -- contacts opted in at the end of each day, by the channel of their consent: a row counts at
    -- the end of day D when it began on or before D and ends after it
    SELECT d.day, t.business, t.consent_channel AS channel, t.purpose, count(*) AS sendable_audience
    FROM days AS d
    JOIN transitions AS t
        ON t.status = 'opted_in'
        AND t.valid_from < d.day + INTERVAL 1 DAY
        AND coalesce(t.valid_to, TIMESTAMP '9999-12-31') >= d.day + INTERVAL 1 DAY
    WHERE NOT getvariable('mart_scoped')
    GROUP BY ALL
),

whole AS (
    SELECT
        day,
        business,
        channel,
        purpose,
        coalesce(c.opt_ins, 0) AS opt_ins,
        coalesce(c.opt_outs, 0) AS opt_outs,
        coalesce(c.confirmations, 0) AS confirmations,
        coalesce(c.opt_ins, 0) - coalesce(c.opt_outs, 0) AS net_change,
        coalesce(a.sendable_audience, 0) AS sendable_audience
    FROM changes AS c
    FULL JOIN audience AS a USING (day, business, channel, purpose)
),

-- The incremental build, by difference -------------------------------------------------------

delta AS (
    -- the touched contacts' rows as the run wrote them (+1) and as they were (-1), where they differ
    SELECT
        sign,
        business,
        purpose,
        status,
        valid_from,
        valid_to,
        consent_method,
        coalesce(decided_by_channel, 'unknown') AS decided_channel,
        coalesce(consent_channel, decided_by_channel, 'unknown') AS consent_channel
    FROM mart_history_delta
    WHERE getvariable('mart_scoped')
),

delta_changes AS (
    SELECT
        CAST(valid_from AS DATE) AS day,
        business,
        decided_channel AS channel,
        purpose,
        sum(sign) AS transitions,
        coalesce(sum(sign) FILTER (WHERE status = 'opted_in'), 0) AS opt_ins,
        coalesce(sum(sign) FILTER (WHERE status = 'opted_out'), 0) AS opt_outs,
        coalesce(sum(sign) FILTER (WHERE status = 'opted_in' AND consent_method = 'double_opt_in'), 0) AS confirmations
    FROM delta
    GROUP BY ALL
),

delta_steps AS (
    -- a changed opted-in row counts from the day it begins (+) to the day it ends (-)
    SELECT day, business, channel, purpose, sum(n) AS n
    FROM (
        SELECT CAST(valid_from AS DATE) AS day, business, consent_channel AS channel, purpose, sign AS n
        FROM delta WHERE status = 'opted_in'
        UNION ALL
        SELECT CAST(valid_to AS DATE), business, consent_channel, purpose, -sign
        FROM delta WHERE status = 'opted_in' AND valid_to IS NOT NULL
    )
    GROUP BY ALL
),

kept_days AS (
    -- up to the previous run's clock the mart holds every day: its audience plus the changed rows'
    SELECT day FROM days WHERE day <= getvariable('mart_previous_day')
),

kept_audience AS (
    SELECT day, business, channel, purpose, sum(n) AS sendable_audience
    FROM (
        SELECT b.day, b.business, b.channel, b.purpose, b.sendable_audience AS n
        FROM consent_daily_before AS b
        WHERE b.day IN (SELECT day FROM kept_days)
        UNION ALL
        SELECT d.day, s.business, s.channel, s.purpose, s.n
        FROM kept_days AS d
        JOIN delta_steps AS s ON s.day <= d.day
    )
    GROUP BY ALL
),

anchor AS (
    -- the audience at the end of the previous run's clock day, as the run leaves it
    SELECT business, channel, purpose, sum(n) AS n
    FROM (
        SELECT business, channel, purpose, sendable_audience AS n
        FROM consent_daily_before WHERE day = getvariable('mart_previous_day')
        UNION ALL
        SELECT business, channel, purpose, n FROM delta_steps WHERE day <= getvariable('mart_previous_day')
    )
    GROUP BY ALL
),

later_steps AS (
    -- after that day (the days this run's clock adds): every opted-in row beginning or ending then
    SELECT day, business, channel, purpose, sum(n) AS n
    FROM (
        SELECT CAST(valid_from AS DATE) AS day, business,
               coalesce(consent_channel, decided_by_channel, 'unknown') AS channel, purpose, 1 AS n
        FROM consent_status_history
        WHERE getvariable('mart_scoped') AND status = 'opted_in'
          AND valid_from >= getvariable('mart_previous_day') + INTERVAL 1 DAY
        UNION ALL
        SELECT CAST(valid_to AS DATE), business, coalesce(consent_channel, decided_by_channel, 'unknown'), purpose, -1
        FROM consent_status_history
        WHERE getvariable('mart_scoped') AND status = 'opted_in'
          AND valid_to >= getvariable('mart_previous_day') + INTERVAL 1 DAY
    )
    GROUP BY ALL
),

later_audience AS (
    SELECT d.day, g.business, g.channel, g.purpose,
           coalesce(a.n, 0) + coalesce((SELECT sum(s.n) FROM later_steps AS s
                                        WHERE s.business = g.business AND s.channel = g.channel
                                          AND s.purpose = g.purpose AND s.day <= d.day), 0) AS sendable_audience
    FROM days AS d
    CROSS JOIN (SELECT business, channel, purpose FROM anchor
                UNION SELECT business, channel, purpose FROM later_steps) AS g
    LEFT JOIN anchor AS a USING (business, channel, purpose)
    WHERE d.day > getvariable('mart_previous_day')
),

scoped_audience AS (
    SELECT * FROM kept_audience WHERE sendable_audience <> 0
    UNION ALL
    SELECT * FROM later_audience WHERE sendable_audience <> 0
),

scoped AS (
    SELECT
        day,
        business,
        channel,
        purpose,
        -- (sums are HUGEINT in DuckDB: the mart's columns stay BIGINT, as a whole build makes them)
        CAST(coalesce(b.opt_ins, 0) + coalesce(c.opt_ins, 0) AS BIGINT) AS opt_ins,
        CAST(coalesce(b.opt_outs, 0) + coalesce(c.opt_outs, 0) AS BIGINT) AS opt_outs,
        CAST(coalesce(b.confirmations, 0) + coalesce(c.confirmations, 0) AS BIGINT) AS confirmations,
        CAST(coalesce(a.sendable_audience, 0) AS BIGINT) AS sendable_audience,
        b.day IS NOT NULL AS was_there,
        coalesce(b.sendable_audience, 0) AS audience_was,
        coalesce(c.transitions, 0) AS transitions_added
    FROM (SELECT * FROM consent_daily_before WHERE day >= getvariable('mart_since')) AS b
    FULL JOIN (SELECT * FROM delta_changes WHERE day >= getvariable('mart_since')) AS c
        USING (day, business, channel, purpose)
    FULL JOIN scoped_audience AS a USING (day, business, channel, purpose)
),

unsure AS (
    -- a row left with no count and no audience stays when a transition still begins that day: sure
    -- when the run added one, or when the row had neither audience nor count before and lost none;
    -- otherwise the history says
    SELECT day, business, channel, purpose
    FROM scoped
    WHERE opt_ins = 0 AND opt_outs = 0 AND confirmations = 0 AND sendable_audience = 0
      AND transitions_added <= 0 AND NOT (was_there AND audience_was = 0 AND transitions_added = 0)
),

still_begun AS (
    SELECT DISTINCT CAST(h.valid_from AS DATE) AS day, h.business, coalesce(h.decided_by_channel, 'unknown') AS channel, h.purpose
    FROM consent_status_history AS h
    WHERE getvariable('mart_scoped') AND h.valid_from >= getvariable('mart_since')
      AND (CAST(h.valid_from AS DATE), h.business, coalesce(h.decided_by_channel, 'unknown'), h.purpose)
          IN (SELECT (day, business, channel, purpose) FROM unsure)
),

by_difference AS (
    SELECT day, business, channel, purpose, opt_ins, opt_outs, confirmations,
           opt_ins - opt_outs AS net_change, sendable_audience
    FROM scoped AS s
    WHERE opt_ins <> 0 OR opt_outs <> 0 OR confirmations <> 0 OR sendable_audience <> 0
       OR transitions_added > 0 OR (was_there AND audience_was = 0 AND transitions_added = 0)
       OR (day, business, channel, purpose) IN (SELECT (day, business, channel, purpose) FROM still_begun)
),

final AS (
    SELECT * FROM whole WHERE NOT getvariable('mart_scoped')
    UNION ALL
    SELECT * FROM by_difference WHERE getvariable('mart_scoped')
)

SELECT * FROM final ORDER BY day, business, channel, purpose
