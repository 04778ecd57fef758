-- run_violations: the rule violations of the opt-ins run $run_id added, per severity, rule and
-- file, with the first lines (checks.py, no_error_violations).
SELECT v.severity, v.rule, v.channel, v.source_file, count(*) AS opt_ins,
       list(v.source_line ORDER BY v.source_line)[1:20] AS lines
FROM consent_violations v JOIN consent_events e USING (event_id)
WHERE e.run_id = $run_id
GROUP BY ALL ORDER BY ALL;
