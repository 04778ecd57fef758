-- register_links: the identifier links this run saw join `identifier_links`. One row per link (the
-- identifiers seen together); its lineage is the earliest sighting, whatever order runs came in.
INSERT INTO identifier_links BY NAME
SELECT * FROM stg_identifier_links
QUALIFY row_number() OVER (PARTITION BY link_id ORDER BY linked_at, source_file, source_line, source_pointer) = 1
ON CONFLICT (link_id) DO UPDATE SET
    linked_at = excluded.linked_at, event_id = excluded.event_id, channel = excluded.channel,
    source_file = excluded.source_file, source_line = excluded.source_line,
    source_pointer = excluded.source_pointer, ingested_at = excluded.ingested_at, run_id = excluded.run_id
WHERE excluded.linked_at < identifier_links.linked_at;
