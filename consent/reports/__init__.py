"""Reports: the dashboard and CSV output."""
