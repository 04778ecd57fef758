-- range_history: the histories of the touched contacts from $low to $high (contact keys), read
-- from the table contact_ranges materialised.
SELECT * FROM touched_history WHERE contact_key BETWEEN $low AND $high;
