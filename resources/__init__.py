"""Resources: the index engine (``resources.index``), the DuckDB statements (``warehouse``), the
embedder (``embedding``), and the thin Dagster resources that wrap them."""
