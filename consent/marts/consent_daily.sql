-- consent_daily: per day, business, channel and purpose: opt-ins, opt-outs, confirmations, net change, sendable audience.
-- Built from consent_status_history, so a day's figures are what the rules decided, not raw event counts.
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
    -- on an incremental build (consent/sql/mart_scope.sql), only the rows that begin or end on a day
    -- rebuilt: the others count the same on every rebuilt day as on the day before the first
    WHERE NOT getvariable('mart_scoped')
       OR h.valid_from >= getvariable('mart_since')
       OR h.valid_to >= getvariable('mart_since')
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

audience_steps AS (
    -- on an incremental build: per day from the first rebuilt one, opted-in rows beginning less ending
    SELECT day, business, channel, purpose, sum(n) AS n
    FROM (
        SELECT CAST(valid_from AS DATE) AS day, business, consent_channel AS channel, purpose, 1 AS n
        FROM transitions
        WHERE getvariable('mart_scoped') AND status = 'opted_in' AND valid_from >= getvariable('mart_since')
        UNION ALL
        SELECT CAST(valid_to AS DATE), business, consent_channel, purpose, -1
        FROM transitions
        WHERE getvariable('mart_scoped') AND status = 'opted_in' AND valid_to >= getvariable('mart_since')
    )
    GROUP BY ALL
),

audience_groups AS (
    SELECT business, channel, purpose FROM mart_audience_before WHERE getvariable('mart_scoped')
    UNION
    SELECT business, channel, purpose FROM audience_steps
),

audience AS (
    -- contacts opted in at the end of each day, by the channel of their consent
    SELECT d.day, t.business, t.consent_channel AS channel, t.purpose, count(*) AS sendable_audience
    FROM days AS d
    JOIN transitions AS t
        ON t.status = 'opted_in'
        AND t.valid_from < d.day + INTERVAL 1 DAY
        AND coalesce(t.valid_to, TIMESTAMP '9999-12-31') >= d.day + INTERVAL 1 DAY
    WHERE NOT getvariable('mart_scoped')
    GROUP BY ALL

    UNION ALL

    -- on an incremental build: the audience this mart holds for the day before the first rebuilt day
    -- (`mart_audience_before`), plus, from the first rebuilt day on, a running sum of the rows that
    -- begin to count (+1 on the day they begin) and stop (-1 on the day they end): a row counts at
    -- the end of day D when it began on or before D and ends after it
    SELECT day, business, channel, purpose, CAST(sendable_audience AS BIGINT) AS sendable_audience
    FROM (
        SELECT
            d.day, g.business, g.channel, g.purpose,
            coalesce(b.sendable_audience, 0) + sum(coalesce(m.n, 0)) OVER (
                PARTITION BY g.business, g.channel, g.purpose ORDER BY d.day
            ) AS sendable_audience
        FROM days AS d
        CROSS JOIN audience_groups AS g
        LEFT JOIN mart_audience_before AS b USING (business, channel, purpose)
        LEFT JOIN audience_steps AS m USING (day, business, channel, purpose)
    )
    WHERE sendable_audience > 0
),

final AS (
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
)

SELECT * FROM final ORDER BY day, business, channel, purpose
