-- opt_in_notices: the rows the opt_in_notices suite validates (opt_in_notices.py):
-- this run's opt-ins that name a notice, once a registry is kept, one flag per rule.
SELECT
    e.source_file,
    e.source_line,
    n.notice_version IS NOT NULL AS notice_known,
    -- validity is judged once, by the state machine (rule notice_not_valid_at_opt_in)
    NOT EXISTS (
        SELECT 1 FROM consent_violations AS v WHERE v.event_id = e.event_id AND v.rule = 'notice_not_valid_at_opt_in'
    ) AS notice_valid_at_opt_in,
    coalesce(n.names_business, TRUE) AS notice_names_business,
    coalesce(n.mentions_whatsapp, TRUE) AS notice_mentions_whatsapp,
    coalesce(len(list_filter(e.purposes, p -> NOT list_contains(n.purposes, p))) = 0, TRUE) AS notice_covers_purposes,
    coalesce(n.says_how_to_opt_out, TRUE) AS notice_says_how_to_opt_out
FROM consent_events AS e
LEFT JOIN consent_notices AS n USING (notice_version)
WHERE e.run_id = $run_id
  AND e.event_type IN ('opt_in', 'opt_in_request', 'opt_in_confirm')
  AND e.notice_version IS NOT NULL
  AND (SELECT count(*) FROM consent_notices) > 0
ORDER BY e.source_file, e.source_line;
