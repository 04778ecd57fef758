-- contact_ranges: ledger events per touched contact, in number order (cut into ranges in Python).
SELECT phone_e164, count(*) AS events
FROM consent_events
WHERE phone_e164 IN (SELECT phone_e164 FROM stg_touched)
GROUP BY phone_e164
ORDER BY phone_e164;
