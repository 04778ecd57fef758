"""Great Expectations 1.x suites, one module per table they guard, and how they run.

Suites are plain GX code a compliance reviewer can read top to bottom. Each
expectation carries `meta={"severity": "error" | "warn"}`: an ERROR failure
fails the run (CLI exit 1, red check in Dagster), a WARN failure is reported.
`runner.validate` runs a suite on a Polars frame and returns the outcome with
the failing rows' lineage (file, line), never their phone numbers.
"""
