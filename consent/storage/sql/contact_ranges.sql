-- contact_ranges: the events per touched contact left to the state machine (touched_history.sql),
-- in contact-key order (cut into ranges in Python).
SELECT contact_key, count(*) AS events
FROM touched_history
GROUP BY contact_key
ORDER BY contact_key;
