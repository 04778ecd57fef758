-- The bucket of each identifier's person: md5 of the person's name modulo the bucket count.
-- (The count cast to UHUGEINT: a bound parameter made the modulo DOUBLE, and 2^128-sized doubles
-- modulo 4 are all 0: every person fell in bucket 0.)
CREATE OR REPLACE TEMP TABLE person_buckets AS
SELECT identifier, person, CAST(md5_number(person) % CAST($buckets AS UHUGEINT) AS INTEGER) AS bucket
FROM person_labels;
