"""Dagster resources: the warehouse resource and the end-of-run step."""
