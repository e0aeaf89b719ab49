"""Request and response models of the ingest service (pydantic v2).

Owns the wire formats: :class:`TradingViewAlert` (``POST /webhook/tradingview``), :class:`TickIn`
(``POST /v1/ticks``), :class:`LandedTick` (one line of the landing log) and the response bodies.
Validation errors name the field (``price``, ``symbol``, ...). The set of known symbols is
passed as validation context ``{"symbols": ...}``. Imported by :mod:`.app` and :mod:`.landing`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

NS_PER_S = 1_000_000_000
MIN_TS_NS = int(datetime(1990, 1, 1, tzinfo=UTC).timestamp()) * NS_PER_S
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<zone>Z|z|[+-]\d{2}:?\d{2})$",
    re.ASCII,  # \d is 0-9 only: int() would also read e.g. Arabic-Indic digits
)


def _not_bool(value: object) -> object:
    """JSON ``true`` / ``false`` is no number (pydantic's lax mode would read it as 1 / 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


Price = Annotated[
    float,
    BeforeValidator(_not_bool),
    Field(gt=0, allow_inf_nan=False, description="Price, > 0, finite."),
]
Size = Annotated[
    float,
    BeforeValidator(_not_bool),
    Field(ge=0, allow_inf_nan=False, description="Quantity, >= 0, finite."),
]
# The raw store keeps seq as int64.
Seq = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=2**63 - 1)]


def _id_text(value: object) -> object:
    """Trade ids arrive as numbers from some venues; they are kept as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


TradeId = Annotated[str, Field(min_length=1, max_length=128), BeforeValidator(_id_text)]


def parse_timestamp_ns(value: object) -> int:
    """Convert an event time to int64 ns UTC.

    Parameters
    ----------
    value : str or int
        ISO-8601 with a zone (``Z`` or ``+hh:mm``; up to 9 fractional digits), or an integer
        of ns since the Unix epoch.

    Returns
    -------
    int
        ns UTC, between 1990-01-01 and now + 1 day.

    Raises
    ------
    ValueError
        On a string that is not ISO-8601 with a zone, or a time outside the range.
    """
    if isinstance(value, bool):
        raise ValueError("must be an ISO-8601 string with a zone or an integer of ns UTC")
    if isinstance(value, int):
        ns = value
    elif isinstance(value, str):
        match = _ISO.match(value.strip())
        if not match:
            raise ValueError(
                "must be ISO-8601 with a zone (e.g. 2020-02-22T00:00:02.111Z) or ns since epoch"
            )
        zone = match["zone"].upper()
        try:
            dt = datetime.fromisoformat(match["base"] + ("+00:00" if zone == "Z" else zone))
        except ValueError as exc:
            raise ValueError(f"not a valid date and time: {exc}") from None
        delta = dt - _EPOCH
        frac = (match["frac"] or "").ljust(9, "0")
        ns = (delta.days * 86_400 + delta.seconds) * NS_PER_S + int(frac)
    else:
        raise ValueError("must be an ISO-8601 string with a zone or an integer of ns UTC")
    if not MIN_TS_NS <= ns <= time.time_ns() + 86_400 * NS_PER_S:
        raise ValueError("must lie between 1990-01-01 and now + 1 day (integers are ns UTC)")
    return ns


def _known_symbol(value: str, info: ValidationInfo) -> str:
    symbols = (info.context or {}).get("symbols")
    if symbols is not None and value not in symbols:
        raise ValueError(f"unknown symbol {value!r} (known: {', '.join(sorted(symbols))})")
    return value


# A configured instrument's symbol (the known ones come in the validation context).
Symbol = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_known_symbol)]


class TradingViewAlert(BaseModel):
    """One TradingView alert, as sent to ``POST /webhook/tradingview``.

    Attributes
    ----------
    symbol : str
        A configured instrument's symbol.
    price : float
        Trade price in the price currency, > 0 and finite.
    volume : float
        Traded quantity, >= 0 and finite.
    timestamp : int
        Event time, ns UTC (given as ISO-8601 with a zone).
    trade_id : str, optional
        Idempotency key from the sender; without it the canonical tick's SHA-256 is used.
    seq : int, optional
        Sender's sequence number (0 to 2**63 - 1), kept with the tick.
    passphrase : str, optional
        The shared secret; checked, never stored.
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    symbol: Symbol
    price: Price
    volume: Size
    timestamp: int = Field(description="ISO-8601 with a zone, e.g. 2024-05-01T13:30:00Z.")
    trade_id: TradeId | None = None
    seq: Seq | None = None
    passphrase: str | None = Field(default=None, repr=False)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: object) -> int:
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 string with a zone")
        return parse_timestamp_ns(value)


class TickIn(BaseModel):
    """One trade in the body of ``POST /v1/ticks``.

    Attributes
    ----------
    symbol : str
        A configured instrument's symbol.
    price : float
        Trade price in the price currency, > 0 and finite.
    size : float
        Traded quantity, >= 0 and finite.
    timestamp : int
        Event time, ns UTC (given as ISO-8601 with a zone or as an integer of ns UTC).
    side : {"buy", "sell", "unknown"}
        Aggressor side.
    trade_id : str, optional
        The venue's trade id; the idempotency key is ``source + symbol + trade_id`` (or the
        canonical tick's SHA-256 without it).
    source : str
        Name of the sender (e.g. ``binance``), 1-64 characters of ``A-Za-z0-9_.-``.
    seq : int, optional
        The sender's sequence number (>= 0): with ``source`` it orders ticks of equal
        ``timestamp`` in the raw store; without it the landing log's arrival number is used.
    exchange, condition : str
        Venue code and the vendor's raw sale-condition code (default ``""``), up to 32 chars.
    ohlc_eligible, volume_eligible : bool
        Whether the print may set a bar's OHLC and counts toward its volume (default true);
        replays of vendor files keep the vendor's sale-condition filtering this way.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    symbol: Symbol
    price: Price
    size: Size
    timestamp: int
    side: Literal["buy", "sell", "unknown"] = "unknown"
    trade_id: TradeId | None = None
    source: str = Field(default="api", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    seq: Seq | None = None
    exchange: str = Field(default="", max_length=32)
    condition: str = Field(default="", max_length=32)
    ohlc_eligible: bool = True
    volume_eligible: bool = True

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: object) -> int:
        return parse_timestamp_ns(value)


class LandedTick(BaseModel):
    """One accepted tick as written to the landing log (one JSON line).

    Attributes
    ----------
    symbol : str
    ts_event : int
        Source timestamp, ns UTC.
    ts_recv : int
        Our receive clock, ns UTC, stamped when the request arrived.
    drift_ms : float
        ``(ts_recv - ts_event) / 1e6``, kept on every tick (SPEC §2).
    price : float
        Price currency.
    size : float
    side : str
        ``buy``, ``sell`` or ``unknown``.
    source : str
    trade_id : str or None
    seq : int or None
        The sender's sequence number; when absent the landing log stores its arrival number.
    exchange, condition : str
    ohlc_eligible, volume_eligible : bool
    trading_date : str
        The instrument's trading date, ``YYYY-MM-DD`` (names the landing file).
    key : str
        Idempotency key (unique in the landing log).
    """

    symbol: str
    ts_event: int
    ts_recv: int
    drift_ms: float
    price: float
    size: float
    side: str
    source: str
    trade_id: str | None = None
    seq: int | None = None
    exchange: str = ""
    condition: str = ""
    ohlc_eligible: bool = True
    volume_eligible: bool = True
    trading_date: str = ""
    key: str = ""


class WatermarkIn(BaseModel):
    """Body of ``POST /v1/watermark``: no tick of ``symbol`` before ``watermark`` will follow.

    Attributes
    ----------
    symbol : str
        A configured instrument's symbol.
    watermark : int
        Event time, ns UTC (ISO-8601 with a zone or an integer of ns UTC).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    symbol: Symbol
    watermark: int

    @field_validator("watermark", mode="before")
    @classmethod
    def _watermark(cls, value: object) -> int:
        return parse_timestamp_ns(value)


class WatermarkResponse(BaseModel):
    """Body of a 200 from ``/v1/watermark``: the symbol's watermark now (ns UTC)."""

    symbol: str
    watermark: int


class IngestResponse(BaseModel):
    """Body of a 200: how many ticks were newly stored and how many were redeliveries."""

    accepted: int
    duplicates: int


class ErrorItem(BaseModel):
    """One validation problem: the tick's position in the request (if a list), field, reason."""

    index: int | None = None
    field: str
    reason: str


class ErrorResponse(BaseModel):
    """Body of a 4xx: a readable message and, for validation errors, one item per problem."""

    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)


def error_items(errors: list[Any], indexed: bool) -> list[ErrorItem]:
    """Turn pydantic's ``ValidationError.errors()`` into :class:`ErrorItem` rows.

    Parameters
    ----------
    errors : list of dict
        From ``ValidationError.errors(include_url=False)``.
    indexed : bool
        Whether the first element of each location is the position in a list.
    """
    items = []
    for e in errors:
        loc = list(e.get("loc", ()))
        index = loc.pop(0) if indexed and loc and isinstance(loc[0], int) else None
        field = ".".join(str(p) for p in loc) or "body"
        reason = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        items.append(ErrorItem(index=index, field=field, reason=reason))
    return items
