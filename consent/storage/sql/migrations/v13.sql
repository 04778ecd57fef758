-- Schema version 13: the business of every quarantined row and skipped item.
-- Run once, in order, inside the migration's transaction (consent/storage/migrations.py).

ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS business VARCHAR;
ALTER TABLE skipped_items ADD COLUMN IF NOT EXISTS business VARCHAR;

-- Rows read before: the business of the events the same file brought, when they name one business
-- (a CSV file's rows are all its folder's). A file that brought no event, or events of several
-- businesses (webhooks attributed by number), leaves its rows null: not attributed; so does a
-- webhook item whose number no business claims (consent.domain.events.business_of's reason).
CREATE TEMP TABLE file_business__v13 AS
SELECT source_file, file_hash, any_value(business) AS business
FROM consent_events
GROUP BY source_file, file_hash
HAVING count(DISTINCT business) = 1;

UPDATE quarantine q SET business = f.business
FROM file_business__v13 f
WHERE q.business IS NULL AND q.source_file = f.source_file AND q.file_hash = f.file_hash
  AND NOT starts_with(q.reason, 'phone_number_id of the webhook is not claimed by any business');

UPDATE skipped_items s SET business = f.business
FROM file_business__v13 f
WHERE s.business IS NULL AND s.source_file = f.source_file AND s.file_hash = f.file_hash;

DROP TABLE file_business__v13;
