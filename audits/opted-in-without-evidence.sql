-- opted-in-without-evidence: opted_in rows missing method, date, channel or lineage (must be empty)
SELECT
    business,
    salted_hash(contact_id) AS contact_hash,
    purpose,
    consent_method,
    consent_at,
    channel,
    event_id,
    source_file,
    source_line
FROM consent_status
WHERE status = 'opted_in'
  AND (consent_method IS NULL OR consent_at IS NULL OR channel IS NULL
       OR event_id IS NULL OR source_file IS NULL OR source_line IS NULL)
