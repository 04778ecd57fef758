-- audience_known: the audience's numbers the warehouse knows without parsing them
-- (consent.sending.gate): a number already in E.164 that is a contact, else the phone cache's
-- normalisation of the spelling and country hint ($version: the phonenumbers metadata version).
SELECT p.phone_raw, p.hint, p.phone_raw AS phone_e164, NULL AS invalid_reason
FROM audience_pairs AS p
WHERE regexp_matches(p.phone_raw, '^\+[1-9][0-9]{6,14}$')
  AND p.phone_raw IN (SELECT contact_id FROM consent_status)
UNION ALL
SELECT p.phone_raw, p.hint, c.phone_e164, c.invalid_reason
FROM audience_pairs AS p
JOIN phone_cache AS c ON c.phone_raw = p.phone_raw AND c.country_hint = p.hint AND c.metadata_version = $version
WHERE NOT (regexp_matches(p.phone_raw, '^\+[1-9][0-9]{6,14}$') AND p.phone_raw IN (SELECT contact_id FROM consent_status));
