-- sql_decidable: the touched contacts whose histories set-based SQL decides exactly as the state
-- machine (consent.domain.reconcile) does, and their events judged by the rule registry. Reads
-- `sql_history` (a range of touched_history.sql's contacts: consent.run.decide_sql) and the policy as `sql_policy` (one row), `sql_rules` and
-- `sql_notices` (consent.run.decide_sql): columns, not parameters, which DuckDB's lambdas read fast.
-- A contact is decided here when every event is an opt-in (or a confirmation) on a channel without
-- double opt-in, an opt-out, a resume or an inbound message: no request, no number change, no
-- inherited opt-in, no purpose named twice, no event twice. Every other contact is left to Python.
CREATE OR REPLACE TEMP TABLE sql_contacts AS
SELECT contact_key
FROM sql_history, sql_policy
GROUP BY contact_key
HAVING bool_and(
        (event_type IN ('opt_in', 'opt_in_confirm')
         AND NOT coalesce(list_contains(doi_channels, channel), false) AND NOT inherited)
        OR event_type IN ('opt_out', 'resume', 'inbound_message'))
   AND bool_and(len(coalesce(purposes, [])) = len(list_distinct(coalesce(purposes, []))))
   AND count(*) = count(DISTINCT event_id);

-- Each event of those contacts with its place in time (effective time, then opt-ins before resumes
-- and messages before opt-outs, then event id: Event.sort_key), the purposes it targets, and, for
-- an opt-in, the rules it breaks (ConsentStateMachine._breaks_*) and the purposes it grants.
CREATE OR REPLACE TEMP TABLE sql_events AS
WITH events AS (
    SELECT
        h.*,
        coalesce(h.occurred_at, h.ingested_at) AS effective_at,
        CASE h.event_type WHEN 'opt_out' THEN 2 WHEN 'resume' THEN 1 WHEN 'inbound_message' THEN 1 ELSE 0 END
            AS apply_rank,
        h.event_type IN ('opt_in', 'opt_in_confirm') AS is_opt_in,
        coalesce(h.purposes, []) AS purpose_list,
        -- opt-outs and resumes without purposes mean all purposes; others the policy does not know are ignored
        CASE WHEN len(coalesce(h.purposes, [])) = 0 THEN s.policy_purposes
             ELSE list_filter(h.purposes, lambda p: list_contains(s.policy_purposes, p)) END AS targets,
        s.* EXCLUDE (policy_purposes),
        n.*
    FROM sql_history AS h
    CROSS JOIN sql_policy AS s
    SEMI JOIN sql_contacts AS c ON c.contact_key = h.contact_key
    -- an equality join (no notice has an empty version: consent.run.decide_sql.applies)
    LEFT JOIN sql_notices AS n ON n.n_version = h.notice_version
), judged AS (
    SELECT
        *,
        CASE WHEN is_opt_in THEN list_filter([
            CASE WHEN occurred_at IS NULL THEN 'missing_consent_date' END,
            CASE WHEN occurred_at > future_limit THEN 'future_date' END,
            CASE WHEN coalesce(consent_method, '') = '' THEN 'missing_consent_method' END,
            CASE WHEN coalesce(consent_method, '') <> '' AND NOT list_contains(active_methods, consent_method)
                 THEN 'method_not_active' END,
            CASE WHEN checkbox_pre_ticked THEN 'pre_ticked_checkbox' END,
            CASE WHEN bundled_with_terms THEN 'bundled_with_terms' END,
            CASE WHEN coalesce(nullif(acquisition_source, ''), 'organic') <> 'organic' THEN 'non_organic_source' END,
            CASE WHEN len(purpose_list) = 0 AND event_type <> 'opt_in_confirm' THEN 'missing_purposes' END,
            CASE WHEN coalesce(notice_version, '') = '' THEN 'missing_notice_version' END,
            CASE WHEN coalesce(notice_version, '') <> '' AND notices_kept AND n_version IS NULL
                 THEN 'notice_unknown' END,
            CASE WHEN n_version IS NOT NULL AND occurred_at IS NOT NULL
                      AND NOT ((n_valid_from IS NULL OR occurred_at >= n_valid_from)
                               AND (n_valid_until IS NULL OR occurred_at < n_valid_until))
                 THEN 'notice_not_valid_at_opt_in' END,
            CASE WHEN n_version IS NOT NULL AND n_deficient THEN 'notice_deficient' END,
            CASE WHEN n_version IS NOT NULL AND n_business IS NOT NULL AND n_business <> business
                 THEN 'notice_names_other_business' END
        ], lambda r: r IS NOT NULL) ELSE [] END AS broken
    FROM events
)
SELECT
    * EXCLUDE (n_purposes, doi_channels, active_methods, refusing_rules, notices_kept, future_limit),
    is_opt_in AND len(list_filter(broken, lambda r: list_contains(refusing_rules, r))) = 0 AS passes,
    -- a notice grants consent only for the purposes it states (ConsentStateMachine._covered)
    CASE WHEN n_version IS NULL THEN targets
         ELSE list_filter(targets, lambda p: list_contains(n_purposes, p)) END AS granted,
    n_version IS NOT NULL AND len(list_filter(targets, lambda p: NOT list_contains(n_purposes, p))) > 0 AS uncovered
FROM judged;
