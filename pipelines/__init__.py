"""Dagster wiring: Definitions, jobs, resources, and the `consent` CLI."""
