-- register_notices: the notices registry is append-only; a version already registered with
-- other content is refused (and reported by the notices_unchanged check), never overwritten.

INSERT INTO staging.stg_notices_refused BY NAME
SELECT
    s.source_file,
    'version ' || s.notice_version || ' is already registered with other content '
        || '(from ' || n.source_file || '); evidence must not change after the fact' AS reason
FROM staging.stg_notices AS s
JOIN consent_notices AS n USING (notice_version)
WHERE s.content_hash <> n.content_hash;

INSERT INTO consent_notices BY NAME
SELECT s.*, $as_of AS loaded_at, $run_id AS run_id
FROM staging.stg_notices AS s
ANTI JOIN consent_notices USING (notice_version);
