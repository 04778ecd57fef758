-- Schema version 7: phone_cache without a primary-key index.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

CREATE TABLE phone_cache__v7 (
    phone_raw VARCHAR NOT NULL, country_hint VARCHAR NOT NULL, metadata_version VARCHAR NOT NULL,
    phone_e164 VARCHAR, phone_region VARCHAR, phone_type VARCHAR, invalid_reason VARCHAR);
INSERT INTO phone_cache__v7 BY NAME SELECT * FROM phone_cache;
DROP TABLE phone_cache;
ALTER TABLE phone_cache__v7 RENAME TO phone_cache;
