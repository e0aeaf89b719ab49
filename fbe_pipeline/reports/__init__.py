"""Daily and weekly trading reviews as static pages: PNG charts rendered with matplotlib's Agg
backend (:mod:`fbe_pipeline.reports.charts`) and an HTML page around them
(:mod:`fbe_pipeline.reports.page`). Plain frames in, files out; no Dagster import here.
"""
