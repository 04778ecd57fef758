-- touched_buckets: each contact to decide again (`stg_touched`) with the bucket of its person
-- (person_buckets.sql), so one person's contacts are decided in one bucket; a contact id no event
-- or link names (an old status row's) is a person of its own, hashed the same way. A full run
-- replaces every row of the decided tables: their contacts are taken too.
CREATE OR REPLACE TEMP TABLE touched_buckets AS
WITH keys AS (
    SELECT contact_key FROM staging.stg_touched
    UNION SELECT business || chr(31) || contact_id FROM consent_status WHERE $full
    UNION SELECT business || chr(31) || contact_id FROM consent_status_history WHERE $full
    UNION SELECT business || chr(31) || contact_id FROM consent_violations WHERE $full
), ids AS (
    SELECT contact_key, substr(contact_key, strpos(contact_key, chr(31)) + 1) AS contact_id FROM keys
)
SELECT i.contact_key, coalesce(p.bucket, CAST(md5_number(i.contact_id) % CAST($buckets AS UHUGEINT) AS INTEGER)) AS bucket
FROM ids AS i LEFT JOIN person_buckets AS p ON p.identifier = i.contact_id;
