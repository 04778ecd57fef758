"""The domain: consent rules, policy, events, phone numbers, the state machine. No I/O, no DuckDB, no Dagster."""
