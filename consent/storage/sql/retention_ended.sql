-- retention_ended: `ended`, the numbers whose evidence the retention purge drops
-- (consent.privacy.erasure.purge_retention): not opted in, and no event since $cutoff.
CREATE OR REPLACE TEMP TABLE ended AS
SELECT e.phone_e164 FROM consent_events e
WHERE e.phone_e164 IS NOT NULL  -- events kept against a BSUID alone are not purged by age
  -- only numbers with an event before the cutoff can have their last one before it: the
  -- grouping below then reads their events, not the whole ledger's
  AND e.phone_e164 IN (SELECT phone_e164 FROM consent_events
                       WHERE coalesce(occurred_at, ingested_at) < $cutoff)
GROUP BY e.phone_e164
HAVING max(coalesce(e.occurred_at, e.ingested_at)) < $cutoff
   AND NOT EXISTS (SELECT 1 FROM consent_status s WHERE s.phone_e164 = e.phone_e164 AND s.status = 'opted_in');
