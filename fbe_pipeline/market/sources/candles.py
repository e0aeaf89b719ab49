"""Reader for vendor 1-minute OHLCV candles (CSV or Parquet), for users without tick data.

Brokers and data vendors (e.g. NSE NIFTY/BANKNIFTY futures from an Indian broker, US equities
from a retail platform) ship minute bars in many small variations of one layout. This reader
accepts those variations and returns one canonical frame, :data:`CANDLE_COLUMNS`.

Accepted layouts
----------------
Header names are matched case-insensitively after turning every run of characters other than
letters and digits into ``_`` (``"Open Interest"`` -> ``open_interest``, ``"<DATE>"`` ->
``date``). Columns not listed below (symbol, ticker, ...) are ignored.

Time, one of:

- one timestamp column, the first present of ``ts``, ``timestamp``, ``datetime``,
  ``date_time``, then ``time`` or ``date`` when there is not both of them. It holds ISO-8601
  date-times (``2024-01-02T09:15:00+05:30``, ``...Z``, or without a zone:
  ``2024-01-02 09:15[:00]``), integer seconds/milliseconds/microseconds/nanoseconds since the
  Unix epoch, UTC (unit told apart by magnitude), or, in Parquet, a ``datetime64`` column with
  or without a zone;
- separate ``date`` and ``time`` columns: the date as ``YYYYMMDD`` (integer or text) or
  ``YYYY-MM-DD`` (a Parquet ``date32`` too), the time as ``HH:MM`` or ``HH:MM:SS``.

Times without a zone are read per :attr:`CandleLayout.naive_tz`: wall-clock time of the
instrument's zone (default) or UTC. A local time that DST makes ambiguous (the fall-back hour)
or nonexistent (the spring-forward gap) is refused rather than guessed.

Prices and sizes: ``open``/``o``, ``high``/``h``, ``low``/``l``, ``close``/``c`` (required);
``volume``/``vol`` and ``oi``/``open_interest``/``openinterest`` (optional: an index has no
volume, a cash instrument no open interest; absent columns and empty cells become NaN).

Row numbers in error messages count data rows from 0 in file order (the header is not a row),
as in the other readers of :mod:`fbe_pipeline.market.sources`.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from fbe_pipeline.market.sources.checks import MIN_TS_NS, float_column, max_ts_ns, read_csv_file

__all__ = ["CANDLE_COLUMNS", "CANDLE_FORMATS", "CandleLayout", "read_candles"]

CANDLE_COLUMNS: Final[tuple[str, ...]] = (
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "open_interest",
)
CANDLE_FORMATS: Final[tuple[str, ...]] = ("bars-csv", "bars-parquet")

_NAIVE_TZS: Final = ("local", "utc")
_LABELS: Final = ("open", "close")
_NS_PER_S: Final = 1_000_000_000
_NS_PER_MINUTE: Final = 60 * _NS_PER_S

# Canonical field -> accepted (normalised) header names, in order of preference.
_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol"),
    "open_interest": ("open_interest", "openinterest", "oi"),
}
_PRICE_FIELDS: Final = ("open", "high", "low", "close")
_TIMESTAMP_NAMES: Final = ("ts", "timestamp", "datetime", "date_time")

# Epoch units by magnitude: seconds stay below 1e11 until the year 5138, and 1990..2100 in ms,
# us and ns span 6.3e11..4.1e12, 6.3e14..4.1e15 and 6.3e17..4.1e18, so the bands cannot meet.
_EPOCH_UPPER: Final = np.array([10**11, 10**14, 10**17], dtype=np.int64)
_EPOCH_UNITS: Final = (("s", _NS_PER_S), ("ms", 1_000_000), ("us", 1_000), ("ns", 1))

_ISO_RE: Final = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
_ZONE_RE: Final = r"(?:Z|[+-]\d{2}:?\d{2})"
_TIME_RE: Final = r"(\d{1,2}):(\d{2})(?::(\d{2}))?"


@dataclass(frozen=True)
class CandleLayout:
    """How to read the parts of a vendor file that its columns cannot tell.

    Attributes
    ----------
    naive_tz : {"local", "utc"}
        Zone of timestamps written without one: ``"local"`` is wall-clock time of the
        instrument's zone (the ``tz`` argument of :func:`read_candles`), ``"utc"`` is UTC.
        Zone-aware timestamps and epoch integers ignore it.
    label : {"open", "close"}
        Which end of the minute a vendor timestamp names: ``"open"`` (``09:15`` is the bar
        ``[09:15, 09:16)``) or ``"close"`` (``09:16`` is that same bar).

    Raises
    ------
    ValueError
        An unknown ``naive_tz`` or ``label``.
    """

    naive_tz: str = "local"
    label: str = "open"

    def __post_init__(self) -> None:
        if self.naive_tz not in _NAIVE_TZS:
            raise ValueError(f"unknown naive_tz {self.naive_tz!r}; expected one of {_NAIVE_TZS}")
        if self.label not in _LABELS:
            raise ValueError(f"unknown label {self.label!r}; expected one of {_LABELS}")


def read_candles(
    path: str | Path,
    fmt: str,
    symbol: str,
    tz: str,
    layout: CandleLayout = CandleLayout(),
) -> pd.DataFrame:
    """Read a vendor file of 1-minute OHLCV candles into FBE's candle frame.

    Parameters
    ----------
    path : str or Path
        The vendor file (layouts in the module docstring).
    fmt : {"bars-csv", "bars-parquet"}
        File format: UTF-8 CSV with a header line, or Parquet.
    symbol : str
        Instrument symbol; named in error messages next to the file.
    tz : str
        IANA zone of the instrument (``"Asia/Kolkata"``, ``"America/New_York"``), used for
        timestamps without a zone when ``layout.naive_tz == "local"``.
    layout : CandleLayout
        Zone of naive timestamps and which end of the bar they label.

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_bars, 7)``, columns :data:`CANDLE_COLUMNS`, sorted by ``ts``, index
        ``0..n-1``:

        - ``ts`` (int64, ns since the Unix epoch, UTC): the bar's open; the bar covers
          ``[ts, ts + 60 s)``. A close-labelled vendor time is moved back by 60 s.
        - ``open``, ``high``, ``low``, ``close`` (float64, the instrument's price currency per
          unit, finite and > 0, ``low <= open, close <= high``).
        - ``volume`` (float64, shares or contracts traded in the bar, >= 0; NaN when the file
          has no volume column or the cell is empty).
        - ``open_interest`` (float64, contracts open at the bar's end as the vendor reports it,
          >= 0; NaN when absent).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        An unknown ``fmt``, an unknown ``tz``; or, with a message starting with the file's
        name and naming the row and column where there is one: an unreadable file, no rows,
        a missing or doubly named timestamp/OHLC column (the columns found are listed), an
        unparseable or empty timestamp or price, a price not finite and > 0, ``high`` below
        or ``low`` above another price of its bar, a negative or infinite volume or open
        interest, a time not on a whole minute, two bars with the same time (both rows named),
        an epoch integer outside 1990-01-01 .. now + 1 day in its unit, or a local time that
        DST makes ambiguous or nonexistent in ``tz``.
    """
    if fmt not in CANDLE_FORMATS:
        raise ValueError(f"unknown candle format {fmt!r}; expected one of {CANDLE_FORMATS}")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}: expected an IANA name") from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"candle file not found: {path}")
    where = f"{path.name} ({symbol})"
    raw = read_csv_file(path) if fmt == "bars-csv" else _read_parquet(path, where)
    if raw.empty:
        raise ValueError(f"{where}: no rows")
    if not isinstance(raw.index, pd.RangeIndex):
        # A frame saved with its timestamps as the index keeps them there in Parquet.
        raw = raw.reset_index()
    originals = [str(column) for column in raw.columns]
    raw.columns = pd.Index([_normalise(column) for column in originals])
    headers = dict(zip(raw.columns, originals, strict=True))
    fields = {field: _pick(raw, aliases, where) for field, aliases in _ALIASES.items()}
    missing = [field for field in _PRICE_FIELDS if fields[field] is None]
    if missing:
        raise ValueError(
            f"{where}: missing price columns {missing}; columns found: {list(headers.values())}"
        )

    ts = _timestamps(raw, headers, tz if layout.naive_tz == "local" else "UTC", where)
    off_minute = ts % _NS_PER_MINUTE != 0
    if off_minute.any():
        row = _first(off_minute)
        raise ValueError(
            f"{where}: row {row}: time {_utc(ts[row])} is not on a whole minute; expected "
            "1-minute bars"
        )
    if layout.label == "close":
        ts = ts - _NS_PER_MINUTE
    _check_unique(ts, where)

    out: dict[str, npt.NDArray[np.int64] | npt.NDArray[np.float64]] = {"ts": ts}
    for field, column in fields.items():
        if column is None:
            out[field] = np.full(len(raw), np.nan)
            continue
        values = float_column(raw[column], headers[column], where)
        if field in ("volume", "open_interest"):
            _check_size(values, headers[column], where)
        else:
            _check_price(values, headers[column], where)
        out[field] = values
    _check_ranges(out, {field: headers[str(fields[field])] for field in _PRICE_FIELDS}, where)
    frame = pd.DataFrame(out, columns=list(CANDLE_COLUMNS))
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------


def _normalise(column: object) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(column).strip().lower()).strip("_")


def _pick(raw: pd.DataFrame, aliases: tuple[str, ...], where: str) -> str | None:
    present = [alias for alias in aliases if alias in raw.columns]
    for alias in present:
        if list(raw.columns).count(alias) > 1:
            raise ValueError(f"{where}: column {alias!r} appears more than once")
    if len(present) > 1:
        # Two columns claiming the same field (e.g. "close" and "c") leave no right choice.
        raise ValueError(f"{where}: columns {present} all name the same field; keep one")
    return present[0] if present else None


def _read_parquet(path: Path, where: str) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, EOFError) as exc:
        raise ValueError(f"{where}: not a readable Parquet file: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------


def _timestamps(
    raw: pd.DataFrame, headers: dict[str, str], naive_zone: str, where: str
) -> npt.NDArray[np.int64]:
    """Vendor time columns -> int64 ns UTC of the vendor label, in file order."""
    columns = list(raw.columns)
    single = next((name for name in _TIMESTAMP_NAMES if name in columns), None)
    if single is None and "date" in columns and "time" in columns:
        return _date_and_time(raw, headers, naive_zone, where)
    single = single or next((name for name in ("time", "date") if name in columns), None)
    if single is None:
        raise ValueError(
            f"{where}: no timestamp column (one of {[*_TIMESTAMP_NAMES, 'time', 'date']}, or "
            f"'date' with 'time'); columns found: {list(headers.values())}"
        )
    if columns.count(single) > 1:
        raise ValueError(f"{where}: column {single!r} appears more than once")
    values = raw[single]
    label = repr(headers[single])
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        _check_no_empty(values, label, where)
        return _ns(pd.DatetimeIndex(values).tz_convert("UTC"))
    if pd.api.types.is_datetime64_dtype(values):
        _check_no_empty(values, label, where)
        return _localise(pd.DatetimeIndex(values), naive_zone, label, where)
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{where}: column {label} is boolean, expected timestamps")
    if pd.api.types.is_numeric_dtype(values):
        return _epoch(values, label, where)
    return _iso(values, naive_zone, label, where)


def _epoch(values: pd.Series, label: str, where: str) -> npt.NDArray[np.int64]:
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers) | (numbers != np.floor(numbers))
    if bad.any():
        row = _first(bad)
        raise ValueError(
            f"{where}: row {row}: column {label}: epoch timestamp {values.iloc[row]!r} is empty "
            "or not a whole number"
        )
    # Integers read as int64 keep all 19 digits of ns; only a column pandas had to read as
    # float (it is then whole, checked above) goes through float64.
    ints = values.to_numpy(dtype=np.int64)
    band = np.searchsorted(_EPOCH_UPPER, ints, side="right")
    mixed = band != band[0]
    if mixed.any():
        row = _first(mixed)
        raise ValueError(
            f"{where}: row {row}: column {label}: epoch timestamp {ints[row]} has another unit "
            f"({_EPOCH_UNITS[band[row]][0]}) than row 0 ({_EPOCH_UNITS[band[0]][0]})"
        )
    unit, factor = _EPOCH_UNITS[band[0]]
    # Bounds in the file's unit: a plausible instant cannot overflow int64 once scaled to ns.
    absurd = (ints < MIN_TS_NS // factor) | (ints > max_ts_ns() // factor)
    if absurd.any():
        row = _first(absurd)
        raise ValueError(
            f"{where}: row {row}: column {label}: epoch timestamp {ints[row]} read as {unit} "
            "since 1970 is outside 1990-01-01 .. now + 1 day"
        )
    return ints * factor


def _iso(values: pd.Series, naive_zone: str, label: str, where: str) -> npt.NDArray[np.int64]:
    text = values.astype("string").str.strip()
    # Validate the shape first: to_datetime alone would also accept a bare "09:15" (today's
    # date) or a date without time, both silently wrong for minute bars.
    zoned = text.str.fullmatch(_ISO_RE + _ZONE_RE).fillna(False).to_numpy(dtype=bool)
    naive = text.str.fullmatch(_ISO_RE).fillna(False).to_numpy(dtype=bool)
    _check_parsed(~(zoned | naive), values, label, where)
    if zoned.any() and naive.any():
        row = _first(zoned != zoned[0])
        raise ValueError(
            f"{where}: row {row}: column {label}: {values.iloc[row]!r} "
            f"{'has' if zoned[row] else 'lacks'} a zone offset but row 0 "
            f"{'does' if zoned[0] else 'does not'}; use one form throughout"
        )
    parsed = pd.to_datetime(text, format="ISO8601", utc=bool(zoned[0]), errors="coerce")
    _check_parsed(parsed.isna().to_numpy(), values, label, where)
    if zoned[0]:
        return _ns(pd.DatetimeIndex(parsed))
    return _localise(pd.DatetimeIndex(parsed), naive_zone, label, where)


def _date_and_time(
    raw: pd.DataFrame, headers: dict[str, str], naive_zone: str, where: str
) -> npt.NDArray[np.int64]:
    for name in ("date", "time"):
        if list(raw.columns).count(name) > 1:
            raise ValueError(f"{where}: column {name!r} appears more than once")
    date_label, time_label = repr(headers["date"]), repr(headers["time"])
    dates = raw["date"]
    if pd.api.types.is_datetime64_dtype(dates) and not isinstance(dates.dtype, pd.DatetimeTZDtype):
        day = pd.Series(pd.DatetimeIndex(dates).as_unit("ns"))
        _check_parsed(
            (day.isna() | (day != day.dt.normalize())).to_numpy(), dates, date_label, where
        )
    else:
        if pd.api.types.is_float_dtype(dates):
            # pandas reads YYYYMMDD as float when a cell is empty; keep the digits, lose the ".0".
            dates = dates.where(dates == np.floor(dates)).astype("Int64")
        # An integer date column (YYYYMMDD read as a number) becomes the same digits as text.
        text = dates.astype("string").str.strip()
        compact = text.str.fullmatch(r"\d{8}").fillna(False).to_numpy(dtype=bool)
        iso = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").fillna(False).to_numpy(dtype=bool)
        day = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
        day[compact] = pd.to_datetime(text[compact], format="%Y%m%d", errors="coerce")
        day[iso] = pd.to_datetime(text[iso], format="%Y-%m-%d", errors="coerce")
        _check_parsed(day.isna().to_numpy(), dates, date_label, where)
    times = raw["time"]
    parts = times.astype("string").str.strip().str.extract(f"^{_TIME_RE}$")
    hms = parts.astype("float64").fillna({2: 0.0})
    valid = (hms[0] < 24) & (hms[1] < 60) & (hms[2] < 60)
    _check_parsed(~valid.to_numpy(dtype=bool), times, time_label, where)
    offset = (
        hms[0].to_numpy(dtype=np.int64) * 3600
        + hms[1].to_numpy(dtype=np.int64) * 60
        + hms[2].to_numpy(dtype=np.int64)
    ) * _NS_PER_S
    naive = pd.DatetimeIndex(_ns(pd.DatetimeIndex(day)) + offset)
    return _localise(naive, naive_zone, f"{date_label} + {time_label}", where)


def _localise(naive: pd.DatetimeIndex, zone: str, label: str, where: str) -> npt.NDArray[np.int64]:
    """Wall-clock times in ``zone`` -> int64 ns UTC, refusing DST-ambiguous or skipped times."""
    naive = naive.as_unit("ns")
    if zone == "UTC":
        return _ns(naive.tz_localize("UTC"))
    # Localising twice, once taking every ambiguous time as DST and once as standard time,
    # finds both kinds of trouble without a loop: a skipped time is NaT in both, an ambiguous
    # one differs between them.
    n = len(naive)
    as_dst = naive.tz_localize(zone, ambiguous=np.ones(n, dtype=bool), nonexistent="NaT")
    as_std = naive.tz_localize(zone, ambiguous=np.zeros(n, dtype=bool), nonexistent="NaT")
    skipped = np.asarray(as_dst.isna(), dtype=bool)
    ambiguous = ~skipped & (_ns(as_dst) != _ns(as_std))
    if skipped.any() or ambiguous.any():
        row = _first(skipped | ambiguous)
        why = (
            "is ambiguous (it occurs twice when DST ends)"
            if ambiguous[row]
            else "does not exist (DST starts and skips it)"
        )
        raise ValueError(
            f"{where}: row {row}: column {label}: local time {naive[row]} {why} in {zone}; "
            "refusing to guess: write times with a UTC offset or as UTC (naive_tz='utc')"
        )
    return _ns(as_dst)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_no_empty(values: pd.Series, label: str, where: str) -> None:
    empty = values.isna().to_numpy()
    if empty.any():
        raise ValueError(f"{where}: row {_first(empty)}: column {label}: empty timestamp")


def _check_parsed(bad: npt.NDArray[np.bool_], values: pd.Series, label: str, where: str) -> None:
    if bad.any():
        row = _first(bad)
        raise ValueError(
            f"{where}: row {row}: column {label}: cannot parse {values.iloc[row]!r:.80} "
            "(expected ISO-8601 date-time, epoch integer, date YYYYMMDD/YYYY-MM-DD, "
            "time HH:MM[:SS])"
        )


def _check_unique(ts: npt.NDArray[np.int64], where: str) -> None:
    order = np.argsort(ts, kind="stable")
    repeated = ts[order][1:] == ts[order][:-1]
    if repeated.any():
        i = _first(repeated)
        first, second = sorted((int(order[i]), int(order[i + 1])))
        raise ValueError(
            f"{where}: rows {first} and {second}: duplicate bar time {_utc(ts[first])} "
            f"({int(repeated.sum())} repeated times in all)"
        )


def _check_price(values: npt.NDArray[np.float64], column: str, where: str) -> None:
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        row = _first(bad)
        raise ValueError(
            f"{where}: row {row}: column {column!r}: price {float(values[row])!r} must be "
            f"finite and > 0 ({int(bad.sum())} such rows)"
        )


def _check_size(values: npt.NDArray[np.float64], column: str, where: str) -> None:
    # NaN is "not reported" (an empty cell); a negative or infinite count is corrupt.
    bad = (values < 0) | np.isinf(values)
    if bad.any():
        row = _first(bad)
        raise ValueError(
            f"{where}: row {row}: column {column!r}: {float(values[row])!r} must be >= 0 and "
            f"finite ({int(bad.sum())} such rows)"
        )


def _check_ranges(
    out: dict[str, npt.NDArray[np.int64] | npt.NDArray[np.float64]],
    names: dict[str, str],
    where: str,
) -> None:
    o, h, lo, c = (out[field] for field in _PRICE_FIELDS)
    body_high = np.maximum(np.maximum(o, c), lo)
    body_low = np.minimum(np.minimum(o, c), h)
    for bad, field, bound, text in (
        (h < body_high, "high", body_high, "below max(open, close, low)"),
        (lo > body_low, "low", body_low, "above min(open, close, high)"),
    ):
        if bad.any():
            row = _first(bad)
            raise ValueError(
                f"{where}: row {row}: column {names[field]!r}: {field} "
                f"{float(out[field][row])!r} is {text} = {float(bound[row])!r} "
                f"({int(bad.sum())} such rows)"
            )


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _ns(index: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
    return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)


def _utc(ns: np.int64) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()
