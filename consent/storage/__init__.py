"""Storage: the one door to DuckDB, the schema and its migrations, the SQL files."""
