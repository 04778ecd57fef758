-- contact_ranges: events per touched contact, in contact-key order (cut into ranges in Python).
SELECT contact_key, count(*) AS events
FROM contact_events
WHERE contact_key IN (SELECT contact_key FROM stg_touched)
GROUP BY contact_key
ORDER BY contact_key;
