"""Market data: vendor sources, loading into the raw store, instruments and their sessions,
aggressor side and 1-minute bars.

Plain Python on pandas/numpy/numba/DuckDB: no Dagster import."""
