-- erased_raw_rows: the staged quarantine rows and skipped items whose raw text names an erased
-- number in any spelling, or an erased BSUID (`erased_raw`: kind, id). Each run of digits (with
-- the separators people type) is cut after each of its groups (a number followed by a date in the
-- same run), and every tail of 6 to 15 digits is hashed: one of them is the national number,
-- whatever the prefix (+, 00, a country code, a trunk 0, "(0)"). The whole run is hashed as E.164
-- too (a wa_id; numbers erased before national hashes were kept). Numbers given a new opt-in after their
-- erasure (`reconsented`) are not matched: they are known again.

-- `reconsented`: the hashes of numbers and BSUIDs given a new opt-in after their erasure (rules, section 8).
CREATE OR REPLACE TEMP TABLE reconsented AS
WITH opt_ins AS (
    SELECT phone_e164, whatsapp_user_id, occurred_at FROM staging.stg_consent_events
    WHERE event_type IN ('opt_in', 'opt_in_confirm')
    UNION ALL
    SELECT phone_e164, whatsapp_user_id, occurred_at FROM consent_events
    WHERE event_type IN ('opt_in', 'opt_in_confirm') AND occurred_at > (SELECT min(erased_at) FROM suppression_list)
), hashed AS (
    SELECT salted_hash(phone_e164) AS hash, occurred_at FROM opt_ins WHERE phone_e164 IS NOT NULL
    UNION ALL SELECT salted_hash(whatsapp_user_id), occurred_at FROM opt_ins WHERE whatsapp_user_id IS NOT NULL
)
SELECT DISTINCT s.phone_hash AS hash FROM hashed h JOIN suppression_list s ON s.phone_hash = h.hash
WHERE h.occurred_at > s.erased_at;

CREATE OR REPLACE TEMP TABLE erased_raw AS
WITH raw AS (
    SELECT 'quarantine' AS kind, quarantine_id AS id, raw_row FROM staging.stg_quarantine WHERE raw_row IS NOT NULL
    UNION ALL
    SELECT 'skipped' AS kind, skipped_id AS id, raw_row FROM staging.stg_skipped WHERE raw_row IS NOT NULL
), digit_runs AS (
    SELECT kind, id, unnest(regexp_extract_all(raw_row, '\+?[0-9][0-9 .()/\-]*[0-9]')) AS spelled FROM raw
), runs AS (
    -- 11 digits or more, no separator, no leading 0: an international number (a wa_id, E.164
    -- without its +), matched whole; any other run may be national and has its tails hashed.
    SELECT kind, id, string_split_regex(spelled, '[^0-9]+') AS parts,
           NOT regexp_full_match(spelled, '\+?[1-9][0-9]{10,}') AS national
    FROM digit_runs
), cut_at AS (
    SELECT kind, id, parts, national, unnest(range(1, len(parts) + 1)) AS groups FROM runs
), cut AS (
    SELECT kind, id, national, array_to_string(parts[1:groups], '') AS run FROM cut_at
), tails AS (
    SELECT kind, id, run, unnest(range(6, least(length(run), 15) + 1)) AS digits FROM cut WHERE national
), candidates AS (
    SELECT kind, id, right(run, digits::INTEGER) AS candidate FROM tails
    UNION ALL
    SELECT kind, id, '+' || CASE WHEN run LIKE '00%' THEN run[3:] ELSE run END FROM cut
    UNION ALL
    SELECT kind, id, unnest(regexp_extract_all(raw_row, '[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]+')) FROM raw
), erased AS (
    SELECT phone_hash AS hash FROM suppression_list WHERE phone_hash NOT IN (SELECT hash FROM reconsented)
    UNION ALL
    SELECT national_hash FROM suppression_list
    WHERE national_hash IS NOT NULL AND phone_hash NOT IN (SELECT hash FROM reconsented)
), matched AS (  -- each distinct candidate hashed once (rows repeat ids, business numbers, dates)
    SELECT candidate FROM (SELECT DISTINCT candidate FROM candidates WHERE candidate <> '')
    WHERE salted_hash(candidate) IN (SELECT hash FROM erased)
)
SELECT DISTINCT kind, id FROM candidates WHERE candidate IN (SELECT candidate FROM matched);
