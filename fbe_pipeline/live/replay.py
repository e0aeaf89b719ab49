"""Replay vendor tick files to the live ingest service (``fbe replay``).

Owns :func:`replay_files` and :func:`replay_frame`: read trade files with the readers of
``fbe load`` (:func:`fbe_pipeline.market.ingest.read_source`), sort them by
``(ts_event, seq)``, and ``POST`` them to ``/v1/ticks`` as signed JSON batches
(``FBE-Signature``, see :func:`fbe_pipeline.live.app.verify_signature`), paced like the
original or as fast as possible; then post one ``/v1/watermark`` per symbol so the last bar
closes. Plain Python and httpx, no Dagster: imported by the CLI, tests and benchmarks.

Delivery is at least once: a batch is retried (fresh signature per attempt) on connection
errors, timeouts and 5xx until the server answers 200, so a server restarted mid-replay gets
every tick; redeliveries are acknowledged as duplicates because every tick carries the
idempotency key ``trade_id = f"{ts_event}-{seq}"``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd

from fbe_pipeline.live.settings import DEFAULT_MAX_BODY_BYTES
from fbe_pipeline.market.instruments import Instrument

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8001"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_RETRY_FOR_S = 120.0
DEFAULT_TIMEOUT_S = 30.0
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 2.0
NS_PER_S = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_S
TICKS_PATH = "/v1/ticks"
WATERMARK_PATH = "/v1/watermark"

# Columns of the raw ticks layout (fbe_pipeline.market.frames) that go on the wire; ts_recv does
# not: the service stamps its own receive time.
REPLAY_COLUMNS: tuple[str, ...] = (
    "symbol",
    "ts_event",
    "price",
    "size",
    "side",
    "source",
    "seq",
    "exchange",
    "condition",
    "ohlc_eligible",
    "volume_eligible",
)

# One TickIn object. %r of a Python float is the shortest text that parses back to the same
# float, so prices and sizes land bit-identical; text fields are pre-escaped JSON strings.
_TICK_TEMPLATE = (
    '{"symbol":%s,"price":%r,"size":%r,"timestamp":%d,"side":%s,"trade_id":"%d-%d",'
    '"source":%s,"seq":%d,"exchange":%s,"condition":%s,"ohlc_eligible":%s,'
    '"volume_eligible":%s}'
)
_TEXT_COLUMNS = ("symbol", "side", "source", "exchange", "condition")
_JSON_BOOL = np.array(["false", "true"], dtype=object)


class ReplayError(Exception):
    """The service refused a request (4xx) or did not acknowledge it within ``retry_for``.

    Attributes
    ----------
    status : int or None
        HTTP status of the refusal; None when retries ran out.
    detail : str
        The server's ``detail`` (or the last transport error when retries ran out).
    """

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


@dataclass
class ReplayReport:
    """Outcome of one replay.

    Attributes
    ----------
    sent : int
        Ticks sent (each counted once, however often its batch was retried).
    accepted, duplicates : int
        Sums of the service's answers: newly stored ticks and acknowledged redeliveries.
    batches : int
        Batches acknowledged.
    retries : int
        Attempts repeated after a connection error, timeout or 5xx (ticks and watermarks).
    elapsed_s : float
        Wall time of the whole replay, seconds, watermarks included.
    latencies_s : list of float
        Per batch, seconds from its first send to its 200 (retries included), in send order.
    watermarks : dict of str to int
        Watermarks the service acknowledged, ns UTC by symbol; empty when it has no
        ``/v1/watermark`` (404).
    """

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    batches: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    watermarks: dict[str, int] = field(default_factory=dict)

    @property
    def ticks_per_s(self) -> float:
        """Ticks sent per second of wall time (0.0 for an instant replay)."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def signature_header(key: bytes, body: bytes, t: int) -> str:
    """Return the ``FBE-Signature`` header value for ``body`` signed at ``t``.

    Parameters
    ----------
    key : bytes
        The service's HMAC key (``FBE_INGEST_HMAC_KEY``).
    body : bytes
        The exact request body.
    t : int
        Signing time, Unix seconds; the service accepts ±300 s around its clock.

    Returns
    -------
    str
        ``t=<t>,v1=<hex HMAC-SHA256(key, f"{t}." + body)>``.
    """
    digest = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def read_ticks(fmt: str, paths: Iterable[Path | str], instrument: Instrument) -> pd.DataFrame:
    """Read trade files with the readers of ``fbe load`` and order them for a replay.

    Parameters
    ----------
    fmt : str
        One of :data:`fbe_pipeline.market.ingest.FORMATS` that yields ticks.
    paths : iterable of Path or str
        Vendor files, all of ``fmt``.
    instrument : Instrument
        The instrument the ticks belong to (its symbol goes into every tick).

    Returns
    -------
    pandas.DataFrame
        The raw ticks layout (:mod:`fbe_pipeline.market.frames`) of every file, concatenated
        and sorted stably by ``(ts_event, seq)`` (int64 ns UTC, int64), with a fresh index.

    Raises
    ------
    ValueError
        On an unknown format, a malformed file (the reader's message), a format that yields
        no ticks (e.g. ``lean-quotes``), or no ticks in all the files together.
    FileNotFoundError
        If a file is missing.
    """
    from fbe_pipeline.market.ingest import read_source

    frames = []
    for path in map(Path, paths):
        found = read_source(fmt, path, instrument)
        if "ticks" not in found:
            raise ValueError(
                f"{path.name}: format {fmt!r} yields {', '.join(found)}, not ticks; "
                "replay needs trades (e.g. tardis-trades, lean-trades, databento-mbo)"
            )
        frames.append(found["ticks"])
    if not frames or not sum(len(f) for f in frames):
        raise ValueError("no ticks to replay: the files hold no trades")
    ticks = pd.concat([f for f in frames if len(f)], ignore_index=True)
    return sort_ticks(ticks)


def sort_ticks(ticks: pd.DataFrame) -> pd.DataFrame:
    """Return ``ticks`` sorted stably by ``(ts_event, seq)`` with a fresh index.

    Raises
    ------
    KeyError
        If ``ts_event`` or ``seq`` is missing.
    """
    order = np.lexsort(
        (ticks["seq"].to_numpy(dtype=np.int64), ticks["ts_event"].to_numpy(dtype=np.int64))
    )
    return ticks.iloc[order].reset_index(drop=True)


def watermarks(ticks: pd.DataFrame) -> dict[str, int]:
    """Return the watermark per symbol that closes the last bar of ``ticks``.

    Parameters
    ----------
    ticks : pandas.DataFrame
        With ``symbol`` (str) and ``ts_event`` (int64 ns UTC).

    Returns
    -------
    dict of str to int
        ``floor(max ts_event, 1 min) + 60 s``, ns UTC, by symbol.
    """
    last = ticks.groupby("symbol", sort=True)["ts_event"].max()
    return {
        str(symbol): (int(ts) // NS_PER_MINUTE) * NS_PER_MINUTE + NS_PER_MINUTE
        for symbol, ts in last.items()
    }


class _Encoder:
    """TickIn JSON objects for row ranges of a sorted ticks frame, built a range at a time.

    Only the numeric columns and factorized text columns are held, so a multi-day replay does
    not keep hundreds of MB of JSON text alive; the objects of a range cut off by the body
    limit are kept for the next batch.
    """

    def __init__(self, ticks: pd.DataFrame) -> None:
        missing = [c for c in REPLAY_COLUMNS if c not in ticks.columns]
        if missing:
            raise ValueError(f"ticks frame lacks columns {missing}")
        self.ts = ticks["ts_event"].to_numpy(dtype=np.int64)
        self.seq = ticks["seq"].to_numpy(dtype=np.int64)
        self.price = ticks["price"].to_numpy(dtype=np.float64)
        self.size = ticks["size"].to_numpy(dtype=np.float64)
        self.text: dict[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.object_]]] = {}
        for column in _TEXT_COLUMNS:
            values = ticks[column].astype(object)
            values = values.where(values.notna(), "")
            codes, uniques = pd.factorize(values)
            escaped = np.array([json.dumps(str(u)) for u in uniques], dtype=object)
            self.text[column] = (np.asarray(codes), escaped)
        self.flags = {
            c: ticks[c].to_numpy(dtype=bool).astype(np.intp)
            for c in ("ohlc_eligible", "volume_eligible")
        }
        self.symbol = ticks["symbol"].astype(str).to_numpy(dtype=object)
        self._pending: list[str] = []
        self._pending_at = 0

    def _text(self, column: str, i: int, k: int) -> list[str]:
        codes, escaped = self.text[column]
        return list(escaped[codes[i:k]])

    def objects(self, i: int, k: int) -> list[str]:
        """Return the JSON objects of rows ``[i, k)`` (ASCII, so characters are bytes)."""
        have = self._pending if self._pending_at == i else []
        if len(have) >= k - i:
            return have[: k - i]
        a = i + len(have)
        ts = self.ts[a:k].tolist()
        seq = self.seq[a:k].tolist()
        rows = zip(
            self._text("symbol", a, k),
            self.price[a:k].tolist(),
            self.size[a:k].tolist(),
            ts,
            self._text("side", a, k),
            ts,
            seq,
            self._text("source", a, k),
            seq,
            self._text("exchange", a, k),
            self._text("condition", a, k),
            _JSON_BOOL[self.flags["ohlc_eligible"][a:k]].tolist(),
            _JSON_BOOL[self.flags["volume_eligible"][a:k]].tolist(),
            strict=True,
        )
        return have + [_TICK_TEMPLATE % row for row in rows]

    def body(self, i: int, k: int, max_bytes: int) -> tuple[bytes, int]:
        """Return the JSON array of rows ``[i, j)`` and ``j``: the longest prefix of
        ``[i, k)`` whose body fits ``max_bytes`` (at least one row).

        Raises
        ------
        ReplayError
            If row ``i`` alone does not fit.
        """
        objs = self.objects(i, k)
        # Body size of the first n objects: brackets plus one comma between neighbours.
        sizes = list(accumulate(len(o) + 1 for o in objs))
        n = int(np.searchsorted(np.asarray(sizes), max_bytes - 1, side="right"))
        if n == 0:
            raise ReplayError(
                f"{self.describe(i)} encodes to {len(objs[0]) + 2} bytes, more than the "
                f"body limit of {max_bytes} bytes"
            )
        self._pending, self._pending_at = objs[n:], i + n
        return ("[" + ",".join(objs[:n]) + "]").encode("ascii"), i + n

    def describe(self, i: int) -> str:
        """Name row ``i``: symbol, ts_event (ns UTC and ISO), seq and trade id."""
        ts, seq = int(self.ts[i]), int(self.seq[i])
        iso = pd.Timestamp(ts, unit="ns", tz="UTC").isoformat()
        return f"tick {self.symbol[i]} ts_event={ts} ({iso}) seq={seq} trade_id={ts}-{seq}"


def _detail(response: httpx.Response) -> str:
    try:
        doc: Any = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(doc, dict) and "detail" in doc:
        return str(doc["detail"])
    return json.dumps(doc)[:500]


class _Sender:
    """Signs and posts bodies, retrying transport errors and 5xx with capped backoff."""

    def __init__(
        self, client: httpx.Client, key: bytes, retry_for: float, report: ReplayReport
    ) -> None:
        self.client = client
        self.key = key
        self.retry_for = retry_for
        self.report = report

    def post(self, path: str, body: bytes, what: str) -> httpx.Response:
        """POST ``body`` to ``path`` until the answer is not a 5xx; return that answer.

        Raises
        ------
        ReplayError
            If no answer below 500 arrived within ``retry_for`` seconds of the first failure.
        """
        failed_at: float | None = None
        delay = BACKOFF_FIRST_S
        attempts = 0
        while True:
            attempts += 1
            # A fresh signing time per attempt: a retry after a long outage must not fall
            # outside the service's ±300 s tolerance.
            headers = {
                "FBE-Signature": signature_header(self.key, body, int(time.time())),
                "Content-Type": "application/json",
            }
            try:
                response = self.client.post(path, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500:
                    if failed_at is not None:
                        log.info("%s delivered after %d attempts", what, attempts)
                    return response
                problem = f"HTTP {response.status_code}: {_detail(response)}"
            now = time.monotonic()
            if failed_at is None:
                failed_at = now
                log.warning(
                    "%s not acknowledged (%s); retrying for up to %g s",
                    what,
                    problem,
                    self.retry_for,
                )
            else:
                log.debug("%s attempt %d failed: %s", what, attempts, problem)
            remaining = failed_at + self.retry_for - now
            if remaining <= 0:
                raise ReplayError(
                    f"{what}: not acknowledged after {attempts} attempts in "
                    f"{now - failed_at:.1f} s; last error: {problem}",
                    detail=problem,
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, BACKOFF_CAP_S)
            self.report.retries += 1


def replay_frame(
    ticks: pd.DataFrame,
    url: str,
    key: bytes | str,
    speed: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    retry_for: float = DEFAULT_RETRY_FOR_S,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> ReplayReport:
    """Send an already-read ticks frame to the ingest service, then the watermarks.

    Tick ``i`` (in ``(ts_event, seq)`` order) is due ``(ts_i - ts_0) / speed`` seconds after
    the start; each batch holds the ticks due by the time it is sent, at most ``batch_size``
    and at most ``max_body_bytes`` of JSON. After the last batch, ``POST /v1/watermark``
    ``{"symbol", "watermark"}`` per symbol with :func:`watermarks`; a 404 (a service without
    that endpoint) is ignored.

    Parameters
    ----------
    ticks : pandas.DataFrame
        Raw ticks layout (:mod:`fbe_pipeline.market.frames`; ``ts_recv`` is not sent), any
        order (sorted here, stably). Symbols must be configured on the service.
    url : str
        Base URL of the service, e.g. ``http://127.0.0.1:8001``.
    key : bytes or str
        The service's HMAC key (``FBE_INGEST_HMAC_KEY``); str is UTF-8 encoded.
    speed : float
        Pacing factor: 1.0 the original pace, 10.0 ten times faster; 0.0 (default) as fast as
        possible, full batches back to back.
    batch_size : int
        Most ticks per request (default 5000).
    retry_for : float
        Seconds to keep retrying one request after its first connection error, timeout or 5xx
        (capped exponential backoff 0.1 s to 2 s); default 120.
    max_body_bytes : int, keyword-only
        Largest request body, bytes; the service's limit (default 1 MiB).
    timeout_s : float, keyword-only
        Connect/read timeout of one attempt, seconds.
    transport : httpx.BaseTransport, keyword-only, optional
        For tests (e.g. ``httpx.MockTransport``); default a real connection with keep-alive.

    Returns
    -------
    ReplayReport

    Raises
    ------
    ValueError
        On an empty frame, missing columns, ``speed < 0``, ``batch_size < 1`` or
        ``retry_for < 0``.
    ReplayError
        On a 4xx (the message names the batch's first tick and the server's detail; not
        retried), a 4xx other than 404 from ``/v1/watermark``, a 200 whose body is not
        ``{"accepted", "duplicates"}``, or when a request is not acknowledged within
        ``retry_for``. Batches before the failing one stay stored on the service.
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if retry_for < 0:
        raise ValueError(f"retry_for must be >= 0, got {retry_for}")
    if ticks.empty:
        raise ValueError("no ticks to replay")
    ticks = sort_ticks(ticks)
    encoder = _Encoder(ticks)
    n = len(ticks)
    key_bytes = key.encode() if isinstance(key, str) else key
    report = ReplayReport()
    # Offsets from the first tick in int64 ns first: float64 seconds since the epoch would
    # lose sub-microsecond resolution.
    due_s = (encoder.ts - encoder.ts[0]) / (NS_PER_S * speed) if speed > 0 else None
    timeout = httpx.Timeout(timeout_s)
    start = time.monotonic()
    with httpx.Client(base_url=url, timeout=timeout, transport=transport) as client:
        sender = _Sender(client, key_bytes, retry_for, report)
        i = 0
        while i < n:
            k = min(i + batch_size, n)
            if due_s is not None:
                wait = due_s[i] - (time.monotonic() - start)
                if wait > 0:
                    time.sleep(wait)
                due = int(np.searchsorted(due_s, time.monotonic() - start, side="right"))
                k = min(max(due, i + 1), k)
            body, j = encoder.body(i, k, max_body_bytes)
            what = f"batch {report.batches + 1} ({j - i} ticks, first {encoder.describe(i)})"
            sent_at = time.monotonic()
            response = sender.post(TICKS_PATH, body, what)
            if response.status_code >= 400:
                raise ReplayError(
                    f"{what} refused with HTTP {response.status_code}: {_detail(response)}",
                    status=response.status_code,
                    detail=_detail(response),
                )
            report.latencies_s.append(time.monotonic() - sent_at)
            accepted, duplicates = _counts(response, what)
            report.accepted += accepted
            report.duplicates += duplicates
            report.sent += j - i
            report.batches += 1
            i = j
        for symbol, mark in watermarks(ticks).items():
            body = json.dumps({"symbol": symbol, "watermark": mark}).encode()
            what = f"watermark {symbol} {mark}"
            response = sender.post(WATERMARK_PATH, body, what)
            if response.status_code == 404:
                log.info("the service has no %s; watermark %s not sent", WATERMARK_PATH, symbol)
                continue
            if response.status_code >= 400:
                raise ReplayError(
                    f"{what} refused with HTTP {response.status_code}: {_detail(response)}",
                    status=response.status_code,
                    detail=_detail(response),
                )
            report.watermarks[symbol] = _acknowledged_mark(response, mark)
    report.elapsed_s = time.monotonic() - start
    return report


def _counts(response: httpx.Response, what: str) -> tuple[int, int]:
    try:
        doc = response.json()
        return int(doc["accepted"]), int(doc["duplicates"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ReplayError(
            f"{what}: unexpected answer HTTP {response.status_code}: {response.text[:200]}",
            status=response.status_code,
        ) from exc


def _acknowledged_mark(response: httpx.Response, sent: int) -> int:
    try:
        return int(response.json()["watermark"])
    except (ValueError, KeyError, TypeError):
        return sent


def replay_files(
    fmt: str,
    paths: Iterable[Path | str],
    instrument: Instrument,
    url: str,
    key: bytes | str,
    speed: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    retry_for: float = DEFAULT_RETRY_FOR_S,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ReplayReport:
    """Read vendor trade files (:func:`read_ticks`) and replay them (:func:`replay_frame`).

    Parameters are those of :func:`read_ticks` and :func:`replay_frame`.

    Returns
    -------
    ReplayReport

    Raises
    ------
    ValueError, FileNotFoundError
        From :func:`read_ticks` (before anything is sent) or a bad argument.
    ReplayError
        From :func:`replay_frame`.
    """
    ticks = read_ticks(fmt, paths, instrument)
    return replay_frame(
        ticks,
        url,
        key,
        speed=speed,
        batch_size=batch_size,
        retry_for=retry_for,
        max_body_bytes=max_body_bytes,
        timeout_s=timeout_s,
    )
