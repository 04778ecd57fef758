"""One run: staging, the touched-contacts scope, publishing, run records, progress and alerts."""
