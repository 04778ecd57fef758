-- macros: defined on every warehouse connection (consent.storage.sql.use_salt).
-- The salted hash of a number or user id: the only form in which marts, audits,
-- dashboards and the suppression list name a contact. Python twin: consent.privacy.erasure.phone_hash.
CREATE OR REPLACE TEMP MACRO salted_hash(value) AS left(sha256(getvariable('hash_salt') || value), 32);
