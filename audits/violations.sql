-- violations: every opt-in refused as consent or warned about, with its rule and lineage (contacts as salted hashes)
SELECT
    v.rule,
    v.severity,
    v.refused,
    v.channel,
    v.event_type,
    v.occurred_at,
    v.source_file,
    v.source_line,
    v.business,
    salted_hash(v.contact_id) AS contact_hash,
    v.event_id
FROM consent_violations AS v
ORDER BY v.severity, v.rule, v.source_file, v.source_line
