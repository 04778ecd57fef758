-- The bucket of each identifier's person: md5 of the person's name modulo the bucket count.
CREATE OR REPLACE TEMP TABLE person_buckets AS
SELECT identifier, person, CAST(md5_number(person) % $buckets AS INTEGER) AS bucket
FROM person_labels;
