"""Domain code of the consent warehouse. Imports no Dagster.

- `phones`: E.164 normalisation.
- `events`: the canonical consent event and its value parsers.
- `channels`: one adapter per input format.
- `policy`: the consent policy and channel mappings (typed configuration).
- `ingest`: reading an exports folder into staged frames.
- `reconcile`: the consent state machine.
- `warehouse`: DuckDB schema and the one-transaction publish.
"""
