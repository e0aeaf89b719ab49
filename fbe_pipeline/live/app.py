"""The ingest HTTP service: ``create_app(settings) -> FastAPI``.

Owns the endpoints ``POST /webhook/tradingview`` (passphrase in the alert), ``POST /v1/ticks``
(``FBE-Signature`` HMAC-SHA256, Stripe's scheme), ``GET /healthz`` and ``GET /metrics``
(Prometheus text, a registry per app), the authentication, body limit, validation and the
metrics. Storage is :class:`~.landing.LandingLog`. Imported by the CLI (``fbe serve``) and tests.

Every request is stamped ``ts_recv`` (ns UTC) on arrival. Accepted ticks are fsynced to the
landing log before the 200; refused requests get a 4xx with a JSON :class:`~.models.ErrorResponse`
and are dead-lettered (with any ``passphrase`` value redacted). Both endpoints are all-or-nothing
per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from fbe_pipeline.live.detector import STAGES, BarsClosed
from fbe_pipeline.live.feeds.metrics import FeedCollector
from fbe_pipeline.live.feeds.status import feeds_path
from fbe_pipeline.live.landing import LandingLog
from fbe_pipeline.live.models import (
    ErrorItem,
    ErrorResponse,
    IngestResponse,
    LandedTick,
    TickIn,
    TradingViewAlert,
    WatermarkIn,
    WatermarkResponse,
    error_items,
)
from fbe_pipeline.live.process import LiveProcess, LiveProcessSpec
from fbe_pipeline.live.service import LiveOptions, LiveService
from fbe_pipeline.live.settings import IngestSettings
from fbe_pipeline.market.instruments import load_instruments
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.storage.store import LocalRawStore, RawStore

WEBHOOK = "/webhook/tradingview"
TICKS = "/v1/ticks"
WATERMARK = "/v1/watermark"
DRIFT_FLAG_MS = 100.0
_ALERTS = TypeAdapter(list[TradingViewAlert])
_TICKS = TypeAdapter(list[TickIn])


class Refused(Exception):
    """A request refused with ``status`` and a message; dead-lettered by the handler."""

    def __init__(
        self, status: int, reason: str, detail: str, errors: list[ErrorItem] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.errors = errors or []


class Metrics:
    """The service's Prometheus metrics, in a registry of their own.

    Attributes
    ----------
    registry : prometheus_client.CollectorRegistry
    accepted, duplicates, dead_lettered : Counter
        Ticks stored, redelivered ticks acknowledged, requests dead-lettered; by ``endpoint``.
    rejected : Counter
        Refused requests by ``endpoint`` and ``reason``.
    latency : Histogram
        Request handling time, seconds, by ``endpoint``.
    drift : Histogram
        ``ts_recv - ts_event`` of accepted ticks, ms, by ``source``.
    drift_flagged : Counter
        Accepted ticks with ``|drift| > 100 ms``, by ``source``.
    last_drift : Gauge
        Drift of the latest accepted tick, ms, by ``symbol``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter(
            "fbe_ingest_accepted", "Ticks newly stored", ["endpoint"], registry=r
        )
        self.duplicates = Counter(
            "fbe_ingest_duplicates", "Redelivered ticks acknowledged", ["endpoint"], registry=r
        )
        self.rejected = Counter(
            "fbe_ingest_rejected", "Refused requests", ["endpoint", "reason"], registry=r
        )
        self.dead_lettered = Counter(
            "fbe_ingest_dead_lettered",
            "Requests kept in the dead-letter store",
            ["endpoint"],
            registry=r,
        )
        self.latency = Histogram(
            "fbe_ingest_request_seconds",
            "Request handling time, seconds",
            ["endpoint"],
            registry=r,
        )
        self.drift = Histogram(
            "fbe_ingest_drift_ms",
            "ts_recv - ts_event of accepted ticks, ms",
            ["source"],
            buckets=(-1000, -100, -10, 0, 10, 50, 100, 250, 1000, 5000, 60_000, float("inf")),
            registry=r,
        )
        self.drift_flagged = Counter(
            "fbe_ingest_drift_flagged",
            "Accepted ticks with |drift| > 100 ms",
            ["source"],
            registry=r,
        )
        self.last_drift = Gauge(
            "fbe_ingest_last_drift_ms",
            "Drift of the latest accepted tick, ms",
            ["symbol"],
            registry=r,
        )
        self.bars_closed = Counter(
            "fbe_live_bars_closed", "Bars closed by the live detector", ["symbol"], registry=r
        )
        self.live_signals = Counter(
            "fbe_live_signals", "Signals recorded by the live detector", ["symbol"], registry=r
        )
        self.stage = Histogram(
            "fbe_live_stage_seconds",
            "Wall time of each stage of a live evaluation, seconds",
            ["stage"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf")),
            registry=r,
        )

    def observe_closed(self, item: BarsClosed) -> None:
        """Count one live evaluation's closed bars, new signals and stage times."""
        self.bars_closed.labels(item.symbol).inc(len(item.bar_closes))
        self.live_signals.labels(item.symbol).inc(len(item.new_signals))
        for name in STAGES:
            self.stage.labels(name).observe(item.stage_seconds.get(name, 0.0))


_PASSPHRASE_VALUE = re.compile(rb'("passphrase"\s*:\s*)"(?:[^"\\]|\\.)*"?', re.DOTALL)


def _redact(body: bytes, secret: str) -> bytes:
    """Return ``body`` with every ``passphrase`` value and every occurrence of ``secret`` replaced.

    A JSON or NDJSON body is rewritten (as JSON) only if it holds either, however escaped. Any
    other body (broken JSON, bad UTF-8, nested too deeply) keeps its bytes but for each
    ``"passphrase": "..."`` value and the UTF-8 / UTF-16 spellings of ``secret``.
    """
    found = False

    def scrub(node: Any) -> Any:
        nonlocal found
        if isinstance(node, dict):
            found = found or "passphrase" in node
            return {scrub(k): "***" if k == "passphrase" else scrub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        if isinstance(node, str) and secret in node:
            found = True
            return node.replace(secret, "***")
        return node

    try:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = _parse_json(body, ndjson=True)  # NDJSON, as the webhook also reads it
        doc = scrub(doc)
    except (ValueError, RecursionError):
        out = _PASSPHRASE_VALUE.sub(rb'\1"***"', body)
        for codec in ("utf-8", "utf-16-le", "utf-16-be"):
            out = out.replace(secret.encode(codec), b"***")
        return out
    return json.dumps(doc).encode() if found else body


def _parse_json(body: bytes, ndjson: bool) -> list[Any]:
    if not ndjson:
        # orjson is several times faster on the big batches of /v1/ticks; anything it refuses
        # (NaN literals, integers beyond 64 bits, lone surrogates, NDJSON) goes through the
        # standard parser below, which keeps the answers to odd input as they were.
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(body)
            return doc if isinstance(doc, list) else [doc]
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if ndjson:
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    try:
        doc = json.loads(text)
    except ValueError:
        if "\n" not in text.strip():
            raise
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    return doc if isinstance(doc, list) else [doc]


def verify_signature(
    header: str | None, body: bytes, key: bytes, tolerance_s: int, now_s: float
) -> None:
    """Check an ``FBE-Signature: t=<unix s>,v1=<hex>`` header (Stripe's scheme).

    The signature is ``hex(HMAC-SHA256(key, f"{t}." + body))``; several ``v1`` entries may be
    given (key rotation), one must match, compared in constant time.

    Raises
    ------
    Refused
        401 on a missing or malformed header, a ``t`` more than ``tolerance_s`` seconds from
        ``now_s``, or no matching signature.
    """
    if not header:
        raise Refused(401, "missing_signature", "missing FBE-Signature header")
    stamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamp = value
        elif name == "v1":
            candidates.append(value)
    if stamp is None or not (stamp.isascii() and stamp.isdigit()) or not candidates:
        raise Refused(401, "bad_signature", "malformed FBE-Signature header: need t=...,v1=...")
    # over 12 digits is past the year 33000: stale (and int() / float() could overflow)
    if len(stamp) > 12 or abs(now_s - int(stamp)) > tolerance_s:
        raise Refused(401, "stale_timestamp", "timestamp outside tolerance")
    expected = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates):
        raise Refused(401, "bad_signature", "signature does not match")


def live_options(settings: IngestSettings) -> LiveOptions:
    """The detector's options from the ingest settings (grace, seal interval)."""
    return LiveOptions(grace_ms=settings.grace_ms, seal_interval_s=settings.seal_interval_s)


def create_app(
    settings: IngestSettings,
    store: RawStore | None = None,
    on_bars_closed: Callable[[BarsClosed], None] | None = None,
    live_process: LiveProcessSpec | None = None,
) -> FastAPI:
    """Build the ingest service with its live detector and sealer.

    Parameters
    ----------
    settings : IngestSettings
        Secrets, limits, live options and ``FBE_HOME``; the instruments are loaded once, here.
    store : RawStore, optional
        The batch pipeline's raw store (default: the local store in ``$FBE_HOME/raw``).
    on_bars_closed : callable, optional
        Called with each :class:`~.detector.BarsClosed` from the live loop thread (tests).
    live_process : LiveProcessSpec, optional
        Run the detector and sealer in a child process built from this spec (``fbe serve``:
        the request handlers then have a core of their own); ``store`` and
        ``on_bars_closed`` are ignored, the spec names the child's own.

    Returns
    -------
    fastapi.FastAPI
        With ``app.state.landing`` (:class:`LandingLog`), ``app.state.metrics``
        (:class:`Metrics`) and ``app.state.live`` (:class:`~.service.LiveService`, started
        and recovered before the first request is served).

    Raises
    ------
    ValueError
        If ``settings.scoring_json`` is not a valid scoring config.
    """
    instruments = load_instruments(settings.home / "instruments.yaml")
    symbols = frozenset(instruments)
    landing = LandingLog(settings.landing_dir, instruments)
    metrics = Metrics()
    config = ScoringConfig.from_dict(json.loads(settings.scoring_json or "{}"))

    def closed(item: BarsClosed) -> None:
        metrics.observe_closed(item)
        if on_bars_closed is not None:
            on_bars_closed(item)

    live: LiveService | LiveProcess
    if live_process is not None:
        live = LiveProcess(live_process, on_bars_closed=metrics.observe_closed)
    else:
        live = LiveService(
            settings.home,
            instruments,
            store if store is not None else LocalRawStore(settings.home / "raw"),
            config,
            live_options(settings),
            on_bars_closed=closed,
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(live.start)
        try:
            yield
        finally:
            await run_in_threadpool(live.stop)
            landing.close()

    app = FastAPI(
        lifespan=lifespan,
        title="FBE ingest",
        summary="Authenticated tick ingest with durable landing (SPEC §6).",
        version="1",
    )
    app.state.landing = landing
    app.state.metrics = metrics
    metrics.registry.register(FeedCollector(feeds_path(settings.home)))
    app.state.live = live
    app.state.settings = settings
    passphrase = settings.webhook_passphrase.encode()
    errors_doc: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 401, 403, 413, 415, 422)
    }

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            raise Refused(413, "too_large", f"body exceeds {settings.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise Refused(413, "too_large", f"body exceeds {settings.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(
        request: Request,
        endpoint: str,
        process: Callable[[Request, bytes, int], Awaitable[list[LandedTick]]],
    ) -> Response:
        ts_recv = time.time_ns()
        started = time.perf_counter()
        body = b""
        try:
            try:
                body = await read_body(request)
                ticks = await process(request, body, ts_recv)
            except Refused:
                raise
            except ValidationError as exc:
                items = error_items(exc.errors(include_url=False), indexed=True)
                raise Refused(422, "invalid", _message(items), items) from exc
            result = await run_in_threadpool(landing.append, ticks)
            if result.accepted:
                live.notify()
            metrics.accepted.labels(endpoint).inc(result.accepted)
            metrics.duplicates.labels(endpoint).inc(result.duplicates)
            for tick in result.landed:
                metrics.drift.labels(tick.source).observe(tick.drift_ms)
                metrics.last_drift.labels(tick.symbol).set(tick.drift_ms)
                if abs(tick.drift_ms) > DRIFT_FLAG_MS:
                    metrics.drift_flagged.labels(tick.source).inc()
            payload = IngestResponse(accepted=result.accepted, duplicates=result.duplicates)
            return JSONResponse(payload.model_dump())
        except Refused as refusal:
            metrics.rejected.labels(endpoint, refusal.reason).inc()
            await run_in_threadpool(
                landing.dead_letter,
                endpoint=endpoint,
                reason=refusal.reason,
                detail=refusal.detail,
                body=_redact(body, settings.webhook_passphrase),
                remote=request.client.host if request.client else None,
                content_type=request.headers.get("content-type"),
                received_ns=ts_recv,
            )
            metrics.dead_lettered.labels(endpoint).inc()
            error = ErrorResponse(detail=refusal.detail, errors=refusal.errors)
            return JSONResponse(error.model_dump(exclude_none=True), status_code=refusal.status)
        finally:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    async def webhook(request: Request, body: bytes, ts_recv: int) -> list[LandedTick]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in ("application/json", "text/plain", ""):
            raise Refused(415, "unsupported_media_type", f"unsupported content type {media!r}")
        try:
            items = _parse_json(body, ndjson=False)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise Refused(400, "malformed", f"body is not JSON: {exc}") from None
        given = [i.get("passphrase") if isinstance(i, dict) else None for i in items]
        if not items or not all(
            isinstance(p, str)
            and hmac.compare_digest(p.encode("utf-8", "surrogatepass"), passphrase)
            for p in given
        ):
            raise Refused(401, "unauthorized", "missing or wrong passphrase")
        alerts = _ALERTS.validate_python(items, context={"symbols": symbols})
        return [
            LandedTick(
                symbol=a.symbol,
                ts_event=a.timestamp,
                ts_recv=ts_recv,
                drift_ms=(ts_recv - a.timestamp) / 1e6,
                price=a.price,
                size=a.volume,
                side="unknown",
                source="tradingview",
                trade_id=a.trade_id,
                seq=a.seq,
            )
            for a in alerts
        ]

    async def ticks_in(request: Request, body: bytes, ts_recv: int) -> list[LandedTick]:
        verify_signature(
            request.headers.get("fbe-signature"),
            body,
            settings.hmac_key,
            settings.tolerance_s,
            ts_recv / 1e9,
        )
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            items = _parse_json(body, ndjson=media in ("application/x-ndjson", "application/jsonl"))
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise Refused(400, "malformed", f"body is not a JSON array or NDJSON: {exc}") from None
        if not items:
            raise Refused(422, "invalid", "no ticks in the body")
        ticks = _TICKS.validate_python(items, context={"symbols": symbols})
        # Built without validation: every field was validated as a TickIn just above.
        return [
            LandedTick.model_construct(
                symbol=t.symbol,
                ts_event=t.timestamp,
                ts_recv=ts_recv,
                drift_ms=(ts_recv - t.timestamp) / 1e6,
                price=t.price,
                size=t.size,
                side=t.side,
                source=t.source,
                trade_id=t.trade_id,
                seq=t.seq,
                exchange=t.exchange,
                condition=t.condition,
                ohlc_eligible=t.ohlc_eligible,
                volume_eligible=t.volume_eligible,
            )
            for t in ticks
        ]

    @app.post(WEBHOOK, response_model=IngestResponse, responses=errors_doc)
    async def tradingview(request: Request) -> Response:
        """Accept one TradingView alert or a JSON list of them (JSON or text/plain body).

        Every alert must carry the shared ``passphrase``; symbol, price, volume and timestamp
        (ISO-8601 with a zone) are validated, all or nothing.
        """
        if not settings.ip_allowed(request.client.host if request.client else None):
            metrics.rejected.labels(WEBHOOK, "forbidden_ip").inc()
            return JSONResponse(
                ErrorResponse(detail="source address not allowed").model_dump(), status_code=403
            )
        return await handle(request, WEBHOOK, webhook)

    @app.post(TICKS, response_model=IngestResponse, responses=errors_doc)
    async def ticks(request: Request) -> Response:
        """Accept a JSON array or NDJSON of ticks signed with ``FBE-Signature``, all or nothing."""
        return await handle(request, TICKS, ticks_in)

    @app.post(WATERMARK, response_model=WatermarkResponse, responses=errors_doc)
    async def watermark(request: Request) -> Response:
        """Record, signed like ``/v1/ticks``, that no tick of ``symbol`` before ``watermark``
        will follow, so the live detector closes the minutes before it (end of a replay)."""
        ts_recv = time.time_ns()
        body = b""
        try:
            body = await read_body(request)
            verify_signature(
                request.headers.get("fbe-signature"),
                body,
                settings.hmac_key,
                settings.tolerance_s,
                ts_recv / 1e9,
            )
            try:
                mark = WatermarkIn.model_validate_json(body, context={"symbols": symbols})
            except ValidationError as exc:
                items = error_items(exc.errors(include_url=False), indexed=False)
                raise Refused(422, "invalid", _message(items), items) from exc
        except Refused as refusal:
            metrics.rejected.labels(WATERMARK, refusal.reason).inc()
            await run_in_threadpool(
                landing.dead_letter,
                endpoint=WATERMARK,
                reason=refusal.reason,
                detail=refusal.detail,
                body=body,
                remote=request.client.host if request.client else None,
                content_type=request.headers.get("content-type"),
                received_ns=ts_recv,
            )
            metrics.dead_lettered.labels(WATERMARK).inc()
            error = ErrorResponse(detail=refusal.detail, errors=refusal.errors)
            return JSONResponse(error.model_dump(exclude_none=True), status_code=refusal.status)
        stored = await run_in_threadpool(landing.advance_watermark, mark.symbol, mark.watermark)
        live.advance_watermark(mark.symbol, stored)
        return JSONResponse(WatermarkResponse(symbol=mark.symbol, watermark=stored).model_dump())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: ``{"status": "ok"}``."""
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """The service's metrics in Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _message(items: list[ErrorItem]) -> str:
    parts = [
        (f"tick {i.index}: " if i.index is not None else "") + f"{i.field}: {i.reason}"
        for i in items
    ]
    return "; ".join(parts)
