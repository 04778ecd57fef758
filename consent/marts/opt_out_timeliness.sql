-- opt_out_timeliness: one row per opt-out request and contact: when the person asked, when the warehouse published it, the first message the business sent after it, and the findings.
-- Findings: honoured (nothing sent for the purposes opted out of), confirmation_message (one non-marketing
-- message within 5 minutes: allowed), sent_after_opt_out, late (published more than the policy's business
-- days after the request; weekends and the holiday calendar's days do not count), backfilled (loaded by
-- the first run that read its channel: history, never `late`, judged by the sends after it alone).
-- Built in three statements (consent/marts/__init__.py runs a mart's statements in order; the last is
-- the mart's rows). The first two write the requests and the messages sent after them as temporary
-- tables, so that the planner knows how few requests have messages: in one statement it cannot
-- estimate a join bounded by time (at 10M events it guessed 50M rows for 73k), so it built the
-- final join's hash table on every request and kept it through the final sort, and a 1GB DuckDB
-- limit ran out of memory.

-- One row per opt-out request: the history rows its event decided (one per purpose), read once.
CREATE OR REPLACE TEMP TABLE opt_out_requests AS
SELECT
    h.business,
    h.contact_id,
    h.decided_by_event_id AS event_id,
    min(h.valid_from) AS asked_at,
    max(coalesce(h.valid_to, TIMESTAMP '9999-12-31')) AS until,
    -- purposes are never null; a sorted list of the distinct values (an ORDER BY inside the
    -- aggregate keeps every row of every group apart: at 1.45M requests it was twice the memory)
    list_sort(list_distinct(list(h.purpose))) AS purposes
-- the whole history, or on an incremental build the history of the contacts the run changed
-- (`mart_history`: consent/marts/__init__.py, consent/storage/sql/mart_scope.sql)
FROM mart_history AS h
WHERE h.status = 'opted_out'
GROUP BY ALL;

-- One row per request that has messages after it: the first, and how many it should not have had.
CREATE OR REPLACE TEMP TABLE opt_out_messages AS
WITH sends AS (
    -- the recipient as a contact id (consent/storage/sql/send_macros.sql): every message sent, or on an
    -- incremental build those sent to the contacts the run changed
    SELECT * FROM mart_sends
),

after AS (
    SELECT
        p.business, p.contact_id, p.event_id, p.asked_at, s.message_id, s.sent_at, s.category,
        row_number() OVER (PARTITION BY p.business, p.contact_id, p.event_id ORDER BY s.sent_at, s.message_id) AS n,
        list_contains(p.purposes, s.category) AS covered
    FROM opt_out_requests AS p
    JOIN sends AS s
      ON s.business = p.business AND s.recipient = p.contact_id
     AND s.sent_at > p.asked_at AND s.sent_at < p.until
),

judged AS (
    SELECT
        *,
        -- one message, the first, within 5 minutes and not marketing: the allowed confirmation
        (n = 1 AND sent_at <= asked_at + INTERVAL 5 MINUTE AND coalesce(category, '') <> 'marketing') AS confirmation
    FROM after
)

SELECT
    business, contact_id, event_id,
    min(sent_at) AS first_message_at,
    arg_min(category, sent_at) AS first_message_category,
    bool_or(confirmation) AS confirmation_message,
    count(*) FILTER (WHERE covered AND NOT confirmation) AS messages_after_opt_out
FROM judged
GROUP BY ALL;

WITH channel_first_run AS (
    -- the first run that read each channel folder (events carry their folder as `channel`)
    SELECT f.channel, arg_min(f.first_seen_run, (ru.started_at, f.first_seen_run)) AS first_run
    FROM source_files AS f
    JOIN runs AS ru ON ru.run_id = f.first_seen_run
    GROUP BY f.channel
),

published AS (
    -- the request's own event (one per id: the ledger's ids are unique), and the run that first
    -- held it: its clock (`as_of`) is when the warehouse knew
    SELECT
        r.*,
        e.channel,
        e.run_id AS published_run,
        coalesce(ru.as_of, e.ingested_at) AS published_at,
        -- a backfill of history: when the business acted on it before is unknown
        coalesce(e.run_id = c.first_run, false) AS backfilled
    FROM opt_out_requests AS r
    JOIN consent_events AS e ON e.event_id = r.event_id AND e.event_type = 'opt_out'
    LEFT JOIN runs AS ru ON ru.run_id = e.run_id
    LEFT JOIN channel_first_run AS c ON c.channel = e.channel
),

final AS (
    SELECT
        p.business,
        salted_hash(p.contact_id) AS contact_hash,
        p.event_id,
        p.channel,
        p.purposes,
        p.asked_at,
        p.published_at,
        p.published_run,
        pc.business_day_number - ac.business_day_number AS business_days_to_publish,
        getvariable('opt_out_deadline_business_days') AS deadline_business_days,
        r.first_message_at,
        r.first_message_category,
        coalesce(r.messages_after_opt_out, 0) AS messages_after_opt_out,
        list_filter([
            CASE WHEN coalesce(r.messages_after_opt_out, 0) = 0 THEN 'honoured' END,
            CASE WHEN r.confirmation_message THEN 'confirmation_message' END,
            CASE WHEN r.messages_after_opt_out > 0 THEN 'sent_after_opt_out' END,
            CASE WHEN p.backfilled THEN 'backfilled' END,
            CASE WHEN NOT p.backfilled
                  AND pc.business_day_number - ac.business_day_number > getvariable('opt_out_deadline_business_days')
                 THEN 'late' END
        ], lambda f: f IS NOT NULL) AS findings
    FROM published AS p
    LEFT JOIN opt_out_messages AS r USING (business, contact_id, event_id)
    LEFT JOIN business_calendar AS ac ON ac.day = p.asked_at::DATE
    LEFT JOIN business_calendar AS pc ON pc.day = p.published_at::DATE
)

SELECT * FROM final ORDER BY asked_at, business, contact_hash, event_id
