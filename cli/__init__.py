"""The `consent` command."""
