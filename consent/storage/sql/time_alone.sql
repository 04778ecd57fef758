-- time_alone: the contacts whose status time alone can have changed since they were last decided
-- (read by event_scope.sql and touched_contacts.sql): a pending request made at least the
-- confirmation window before the run's clock (it may have expired), an opt-in given at least the
-- policy's shortest validity before it (it may have lapsed), a violation of a time-dependent rule
-- (the rule registry; one about the opt-in's own date, such as a future date, only once the clock
-- plus the allowed skew has reached that date), and rows with no date.
CREATE OR REPLACE TEMP TABLE time_alone AS
SELECT business, contact_id FROM consent_status
WHERE (status = 'pending' AND (status_since IS NULL OR status_since <= $requested_by))
   OR (status = 'opted_in' AND $consent_expires AND (consent_at IS NULL OR consent_at <= $given_by))
UNION
SELECT business, contact_id FROM consent_violations
WHERE list_contains($time_dependent_rules, rule)
  AND (NOT list_contains($until_dated_rules, rule) OR occurred_at IS NULL OR occurred_at <= $dated_by);
