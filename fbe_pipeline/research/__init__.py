"""Research: features, scoring and signals, regimes, slippage, the trade rules and the backtest.

Plain Python on pandas/numpy/numba/DuckDB: no Dagster import."""
