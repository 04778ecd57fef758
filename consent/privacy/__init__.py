"""Privacy: erasure, retention, access reports."""
