-- staged_opt_ins: the rows the staged_opt_ins suite validates (staged_opt_ins.py):
-- staged opt-ins that claim consent by themselves (a double opt-in's click is checked at confirmation).
SELECT event_type, channel, (phone_e164 IS NULL OR regexp_matches(phone_e164, '^\+[1-9][0-9]{6,14}$')) AS phone_is_e164,
       consent_method, occurred_at, notice_version, source_file, source_line
FROM staging.stg_consent_events
WHERE event_type IN ('opt_in', 'opt_in_confirm')
  AND NOT list_contains($double_opt_in_channels::VARCHAR[], channel)
ORDER BY source_file, source_line;
