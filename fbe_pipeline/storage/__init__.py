"""Storage: the write-once raw store (local and S3), its integrity verification, and read-only
queries over the DuckDB warehouse.

Plain Python on pandas/numpy/numba/DuckDB: no Dagster import."""
