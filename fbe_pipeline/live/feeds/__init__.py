"""Market-data feed connectors (issue 14): clients of a venue's public trade stream that
forward trades to the ingest service's ``POST /v1/ticks``, so the landing log keeps one writer.

``base`` has the venue-neutral types and the :class:`~fbe_pipeline.live.feeds.base.Feed`
protocol, one module per venue implements it (``binance``), ``connector`` runs one feed
(reconnects, backfill, heartbeat, circuit breaker, backpressure), ``status`` keeps what
``fbe feeds`` and ``/metrics`` show.
"""
