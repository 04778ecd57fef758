-- One round of label propagation (person_buckets.sql): each identifier takes the smallest person
-- label among itself and its neighbours. The count of identifiers whose label changed ends the loop.
CREATE OR REPLACE TEMP TABLE person_labels_next AS
SELECT l.identifier, least(l.person, coalesce(min(n.person), l.person)) AS person
FROM person_labels AS l
LEFT JOIN person_edges AS e ON e.a = l.identifier
LEFT JOIN person_labels AS n ON n.identifier = e.b
GROUP BY l.identifier, l.person;

SELECT count(*) FROM person_labels_next AS x JOIN person_labels AS l USING (identifier)
WHERE x.person <> l.person;
