-- contact_events: every ledger event with the contact it applies to (consent-rules.md sections 9
-- and 10). Temporary views of this connection, derived from the ledger and identifier_links only,
-- so the result never depends on whether a link or an event arrived first. They read
-- `scoped_events` and `scoped_links`: the whole ledger and links on a full run, the part an
-- incremental run needs on a night (event_scope.sql; consent.run.scope.scope_events).

-- Every number a BSUID is linked to (in its business), with when; a BSUID that replaced another (or
-- was replaced) reaches the other's numbers when it has none of its own.
CREATE OR REPLACE TEMP VIEW bsuid_phones AS
WITH direct AS (
    SELECT business, whatsapp_user_id AS user_id, phone_e164 AS phone, linked_at, 2 AS priority
    FROM scoped_links WHERE phone_e164 IS NOT NULL AND whatsapp_user_id IS NOT NULL
), moved AS (
    SELECT l.business, l.whatsapp_user_id AS user_id, d.phone, d.linked_at, 1 AS priority
    FROM scoped_links AS l JOIN direct AS d ON d.business = l.business AND d.user_id = l.previous_user_id
    UNION ALL
    SELECT l.business, l.previous_user_id AS user_id, d.phone, d.linked_at, 1 AS priority
    FROM scoped_links AS l JOIN direct AS d ON d.business = l.business AND d.user_id = l.whatsapp_user_id
    WHERE l.previous_user_id IS NOT NULL
)
SELECT business, user_id, phone, max(priority) AS priority, max(linked_at) AS linked_at
FROM (SELECT * FROM direct UNION ALL SELECT * FROM moved)
GROUP BY business, user_id, phone
-- a BSUID's own links, else those of the BSUID it replaced or that replaced it
QUALIFY max(priority) = max(max(priority)) OVER (PARTITION BY business, user_id);

-- A BSUID reaches the number it was most recently linked to.
CREATE OR REPLACE TEMP VIEW bsuid_phone AS
SELECT business, user_id, arg_max(phone, (linked_at, phone)) AS phone FROM bsuid_phones GROUP BY ALL;

-- A parent BSUID spans the businesses of one enterprise: it reaches the number it was most recently
-- linked to, directly or through one of its BSUIDs.
CREATE OR REPLACE TEMP VIEW parent_phone AS
SELECT parent_user_id, arg_max(phone, (linked_at, phone)) AS phone
FROM (
    SELECT parent_user_id, phone_e164 AS phone, linked_at FROM scoped_links
    WHERE parent_user_id IS NOT NULL AND phone_e164 IS NOT NULL
    UNION ALL
    SELECT l.parent_user_id, b.phone, l.linked_at FROM scoped_links AS l
    JOIN bsuid_phone AS b ON b.business = l.business AND b.user_id = l.whatsapp_user_id
    WHERE l.parent_user_id IS NOT NULL
)
GROUP BY ALL;

-- Each event's contact: its number; else the number its BSUID (or parent BSUID) is linked to;
-- else the BSUID itself (kept, never quarantined, until a link is learnt).
-- A BSUID-only opt-out also reaches every other number its BSUID is linked to (when in doubt, suppress).
CREATE OR REPLACE TEMP VIEW ledger_contacts AS
SELECT e.*, coalesce(e.phone_e164, b.phone, p.phone, e.whatsapp_user_id, e.parent_user_id) AS contact_id
FROM scoped_events AS e
LEFT JOIN bsuid_phone AS b ON e.phone_e164 IS NULL AND b.business = e.business AND b.user_id = e.whatsapp_user_id
LEFT JOIN parent_phone AS p ON e.phone_e164 IS NULL AND p.parent_user_id = e.parent_user_id
UNION ALL
SELECT e.*, a.phone AS contact_id
FROM scoped_events AS e
JOIN bsuid_phones AS a ON a.business = e.business AND a.user_id = e.whatsapp_user_id
JOIN bsuid_phone AS b ON b.business = e.business AND b.user_id = e.whatsapp_user_id AND b.phone <> a.phone
WHERE e.phone_e164 IS NULL AND e.event_type = 'opt_out';

-- Number changes, followed along chains (old -> new -> newer): the old number's history before
-- the first change reaches every later number.
CREATE OR REPLACE TEMP VIEW number_changes AS
WITH RECURSIVE chain (business, old_contact, new_contact, changed_at, depth) AS (
    SELECT business, contact_id, changed_to, coalesce(occurred_at, ingested_at), 1
    FROM ledger_contacts
    WHERE event_type = 'number_change' AND changed_to IS NOT NULL AND changed_to <> contact_id
    UNION ALL
    SELECT c.business, c.old_contact, n.changed_to, c.changed_at, c.depth + 1
    FROM chain AS c
    JOIN ledger_contacts AS n
      ON n.business = c.business AND n.contact_id = c.new_contact AND n.event_type = 'number_change'
     AND coalesce(n.occurred_at, n.ingested_at) > c.changed_at
    WHERE c.depth < 8 AND n.changed_to <> c.old_contact
)
SELECT DISTINCT business, old_contact, new_contact, changed_at FROM chain;

CREATE OR REPLACE TEMP VIEW contact_events AS
WITH carried AS (
    -- the new number of a change sees the change itself, and the old number's history before it
    SELECT * REPLACE (changed_to AS contact_id), false AS inherited
    FROM ledger_contacts WHERE event_type = 'number_change' AND changed_to IS NOT NULL
    UNION ALL
    SELECT l.* REPLACE (c.new_contact AS contact_id), true AS inherited
    FROM ledger_contacts AS l
    JOIN number_changes AS c
      ON l.business = c.business AND l.contact_id = c.old_contact
     AND coalesce(l.occurred_at, l.ingested_at) < c.changed_at
    UNION ALL
    -- opt_out_scope all_businesses: an opt-out given to one business reaches every business
    SELECT l.* REPLACE (b.business AS business), true AS inherited
    FROM ledger_contacts AS l
    JOIN (SELECT DISTINCT business FROM consent_events UNION SELECT unnest(businesses) FROM staging.stg_run) AS b
      ON b.business <> l.business
    WHERE getvariable('opt_out_all_businesses') AND l.event_type = 'opt_out'
)
SELECT *, false AS inherited, business || chr(31) || contact_id AS contact_key FROM ledger_contacts
UNION ALL
SELECT *, business || chr(31) || contact_id AS contact_key FROM carried
QUALIFY row_number() OVER (PARTITION BY business, contact_id, event_id ORDER BY inherited) = 1;
