"""Quality: the correctness checks, Great Expectations suites and pandera contracts of every table.

Plain Python on pandas/numpy/numba/DuckDB: no Dagster import."""
