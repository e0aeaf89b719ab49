"""Readers for QuantConnect Lean data files (trade ticks, quote ticks, minute trade bars).

Lean stores one zip per instrument and day, named ``YYYYMMDD_<kind>.zip``; the CSV inside has no
header and times as milliseconds since local midnight of that date in the data's time zone
(America/New_York for US equities, UTC for the COMEX futures sample). Equity prices are scaled by
10,000 (deci-cents); futures prices are plain. The layouts are those of Lean's ``Tick`` and
``TradeBar`` readers (QuantConnect/Lean, ``Common/Data/Market/Tick.cs``, ``TradeBar.cs``).

Every reader returns exactly the columns of :mod:`fbe_pipeline.market.frames` with the dtypes
documented
there. Nothing is written anywhere.

Trade eligibility
-----------------
Lean keeps the consolidated-tape sale conditions of a trade as a hexadecimal bit mask of its
``TradeConditionFlags`` enum (QuantConnect/Lean, ``Common/Data/Auxiliary/TradeConditionFlags.cs``).
:func:`condition_eligibility` maps it to the two flags of a raw tick:

``ohlc_eligible``
    The print's price is a regular-way, contemporaneous market price and may set a bar's
    open/high/low/close. Following the "last sale eligibility" matrices of the CTA Plan (CTS
    Output Specification, appendix "Sale Condition / Last Sale Eligibility") and of the UTP Plan
    (UTDF Specification, "Sale Condition Modifier Matrix"), prints whose condition does *not*
    update the consolidated last sale are excluded: Cash, Next Day, Seller (non-regular
    settlement terms), Form T / Extended Hours (outside the regular session), Average Price,
    Derivatively Priced, Prior Reference Price, Price Variation and Stock-Option / contingent
    trades (price not set by the market at execution time), Official Open / Official Close
    (market-centre reports, not executions) and Odd Lot. "Sold out of sequence" (Lean:
    ``Sold | OutOfSequence``) stays eligible: the matrices let it update the consolidated
    high/low, its price is a contemporaneous market price reported late, and the vendor bars
    below use it for open/close too.

    One deliberate deviation from the matrices: **Intermarket Sweep (ISO) prints are
    OHLC-ineligible.** The matrices let them update last, but Lean's own minute bars (the
    vendor reference this reader is tuned against) never take open/high/low/close from an ISO
    print, on any exchange, while counting its volume. ISO fills are exempt from Reg NMS
    order protection (Rule 611(b)(5)/(6)): a sweep executes simultaneously on several venues,
    each venue may print through the protected quote and reports independently, so the order
    of sweep prints against regular prints in the tape is arbitrary. Excluding them moves the
    share of regular-session SPY bars whose OHLC matches the vendor from ~74 % to ~99 % (BAC
    ~92 % to ~99 %), measured on 2013-10-07..11; no other single condition comes close.
``volume_eligible``
    The print counts towards volume: every condition except Official Open / Official Close,
    which repeat volume already reported by the individual executions (both matrices: volume
    "N").

Residual differences from the vendor bars (0.5 % of regular-session bars, 2013-10-07..11) are
vendor conventions no per-print flag can express: the vendor's 09:30 bar opens at the listing
market's opening-auction print (not the first eligible print) and counts only the first print
of a multi-print Arca auction; its 15:59 bar includes the closing-auction prints, which are
stamped 16:00:00-16:00:12 and so fall outside a ``[09:30, 16:00)`` session; and four single
average-price or cash prints set a vendor high/low although both plans exclude them.

Both flags are False for ``suspicious == 1`` prints (the vendor's bad-print flag) and
``ohlc_eligible`` is False for a zero-size print (the futures files carry a few; no quantity
changed hands, so the price is not evidence of a trade). A print without conditions (empty
field, as in the futures files) is regular way: eligible for both. ``TradeThroughExempt`` and
the undocumented bit 30 carry no eligibility information and are ignored.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zipfile
import zlib
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from fbe_pipeline.market.frames import QUOTE_COLUMNS, REFERENCE_BAR_COLUMNS, TICK_COLUMNS
from fbe_pipeline.market.sources.checks import max_ts_ns

__all__ = [
    "LEAN_FLAGS",
    "OHLC_INELIGIBLE_MASK",
    "VOLUME_INELIGIBLE_MASK",
    "condition_eligibility",
    "parse_condition_bits",
    "read_lean_minute_bars",
    "read_lean_quotes",
    "read_lean_trades",
]

SOURCE: Final = "lean"

# Bit positions of QuantConnect Lean's TradeConditionFlags enum
# (Common/Data/Auxiliary/TradeConditionFlags.cs).
LEAN_FLAGS: Final[dict[str, int]] = {
    "Regular": 1 << 0,
    "Cash": 1 << 1,
    "NextDay": 1 << 2,
    "Seller": 1 << 3,
    "YellowFlag": 1 << 4,
    "IntermarketSweep": 1 << 5,
    "OpeningPrints": 1 << 6,
    "ClosingPrints": 1 << 7,
    "ReOpeningPrints": 1 << 8,
    "DerivativelyPriced": 1 << 9,
    "FormT": 1 << 10,
    "Sold": 1 << 11,
    "Stopped": 1 << 12,
    "ExtendedHours": 1 << 13,
    "OutOfSequence": 1 << 14,
    "Split": 1 << 15,
    "Acquisition": 1 << 16,
    "Bunched": 1 << 17,
    "StockOption": 1 << 18,
    "Distribution": 1 << 19,
    "AveragePrice": 1 << 20,
    "Cross": 1 << 21,
    "PriceVariation": 1 << 22,
    "Rule155": 1 << 23,
    "OfficialClose": 1 << 24,
    "PriorReferencePrice": 1 << 25,
    "OfficialOpen": 1 << 26,
    "CapElection": 1 << 27,
    "AutoExecution": 1 << 28,
    "TradeThroughExempt": 1 << 29,
    "Undocumented": 1 << 30,
    "OddLot": 1 << 31,
}


def _mask(*names: str) -> int:
    out = 0
    for name in names:
        out |= LEAN_FLAGS[name]
    return out


# Conditions that do not update the consolidated last sale in the CTA / UTP matrices
# (CTA: CTS Output Specification, "Sale Condition / Last Sale Eligibility"; UTP: UTDF
# Specification, "Sale Condition Modifier Matrix"): C cash, N next day, R seller, T/U Form T and
# extended hours, W average price, 4 derivatively priced, P prior reference price, H price
# variation, V/7 contingent and QCT (Lean: StockOption), M/Q official close/open, I odd lot.
# IntermarketSweep is the one vendor-driven addition, see the module docstring.
OHLC_INELIGIBLE_MASK: Final[int] = _mask(
    "Cash",
    "NextDay",
    "Seller",
    "FormT",
    "ExtendedHours",
    "AveragePrice",
    "DerivativelyPriced",
    "PriorReferencePrice",
    "PriceVariation",
    "StockOption",
    "OfficialOpen",
    "OfficialClose",
    "OddLot",
    "IntermarketSweep",
)

# Official open/close reports restate the auction volume already printed (volume "N" in both
# matrices); counting them would double the auction.
VOLUME_INELIGIBLE_MASK: Final[int] = _mask("OfficialOpen", "OfficialClose")

_TRADE_FIELDS: Final = ("ms", "price", "size", "exchange", "condition", "suspicious")
_QUOTE_FIELDS: Final = (
    "ms",
    "bid_px",
    "bid_sz",
    "ask_px",
    "ask_sz",
    "exchange",
    "condition",
    "suspicious",
)
_BAR_FIELDS: Final = ("ms", "open", "high", "low", "close", "volume")
_STRING_FIELDS: Final = frozenset({"exchange", "condition"})

_DATE_RE: Final = re.compile(r"^(\d{8})_")
_CONTRACT_RE: Final = re.compile(r"_(\d{6})\.csv$", re.IGNORECASE)
_HEX_RE: Final = re.compile(r"^[0-9a-fA-F]{1,16}$")
_MS_PER_DAY: Final = 86_400_000
_MIN_DATE: Final = date(1990, 1, 1)
# What zipfile raises on a corrupt archive or entry, besides BadZipFile.
_ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
)
_NS_PER_MS: Final = 1_000_000


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def read_lean_trades(
    path: str | Path,
    symbol: str,
    tz: str,
    price_scale: float,
    contract: str | None = None,
) -> pd.DataFrame:
    """Read a Lean trade-tick zip into raw ticks.

    Parameters
    ----------
    path
        ``.../YYYYMMDD_trade.zip``; the trading date is taken from the file name. The CSV inside
        has no header and six fields: ``ms_since_midnight, price * price_scale, size, exchange,
        sale_condition, suspicious``.
    symbol
        Instrument symbol written to the ``symbol`` column.
    tz
        IANA zone of the file's timestamps: ``"America/New_York"`` for Lean US equities,
        ``"UTC"`` for Lean futures.
    price_scale
        Divisor from the stored integer to the price in the instrument's currency: 10000.0 for
        equities (deci-cents), 1.0 for futures.
    contract
        Futures only: the contract month ``"YYYYMM"`` to read from a zip holding one CSV per
        contract (``*_YYYYMM.csv``). ``None`` selects the front month, defined as the contract
        with the largest total traded size in that zip (ties: the earlier month); the most
        traded contract is the one whose price the market is discovering that day, which is
        what "front month" means for a bar pipeline, and it needs no expiry calendar. Must be
        ``None`` for a zip with a single, contract-less CSV (equities).

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_rows, 12)``, columns :data:`fbe_pipeline.market.frames.TICK_COLUMNS`, one row
        per CSV
        row in file order (index ``0..n-1``):

        - ``symbol`` (object str);
        - ``ts_event`` (int64, ns since the epoch, UTC): the file date's local wall-clock time
          ``00:00 + ms`` in ``tz``, converted to UTC with pandas' zone rules (DST-correct; an
          ambiguous local time resolves to the earlier instant and a skipped one shifts
          forward, as Lean/NodaTime's lenient resolver does);
        - ``ts_recv`` (Int64, all ``<NA>``: Lean has no receive timestamp);
        - ``price`` (float64, price currency per unit, > 0), ``size`` (float64, shares or
          contracts, >= 0);
        - ``side`` (``"unknown"``), ``source`` (``"lean"``), ``seq`` (int64, 0-based row number
          in the selected CSV);
        - ``exchange`` (object str, the Lean exchange code, e.g. ``"P"``, ``"usa"``),
          ``condition`` (object str, the raw hex sale-condition mask, ``""`` when none);
        - ``ohlc_eligible``, ``volume_eligible`` (bool), see :func:`condition_eligibility`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a zip, no ``YYYYMMDD_`` date in the file name, unknown or ambiguous contract, or a
        malformed CSV: wrong field count, non-numeric number, non-integral or out-of-day
        milliseconds, non-positive or non-finite price, negative size, bad hex condition,
        ``suspicious`` other than 0/1.

    Notes
    -----
    Suspicious prints are kept (flagged ineligible) so that the raw store stays complete.
    Sources: QuantConnect Lean ``Tick.cs`` (file layout) and ``TradeConditionFlags.cs`` (bits).
    """
    path = Path(path)
    day = _file_date(path)
    with _open_zip(path) as zf:
        member, raw = _read_trade_member(zf, path, contract)
    where = f"{path}:{member}"
    ms = _checked_ms(raw["ms"].to_numpy(), where)
    price = raw["price"].to_numpy() / float(price_scale)
    size = raw["size"].to_numpy()
    _check_positive(price, "price", where)
    _check_non_negative(size, "size", where)
    suspicious = _checked_flag(raw["suspicious"].to_numpy(), where)
    condition = raw["condition"]
    bits = parse_condition_bits(condition, where)
    ohlc, volume = condition_eligibility(bits)
    ohlc &= ~suspicious & (size > 0)
    volume &= ~suspicious

    n = len(raw)
    frame = pd.DataFrame(
        {
            "symbol": _const(symbol, n),
            "ts_event": _wall_clock_to_utc_ns(day, ms, tz),
            "ts_recv": _all_na_int64(n),
            "price": price,
            "size": size,
            "side": _const("unknown", n),
            "source": _const(SOURCE, n),
            "seq": np.arange(n, dtype=np.int64),
            "exchange": raw["exchange"].to_numpy(dtype=object),
            "condition": condition.to_numpy(dtype=object),
            "ohlc_eligible": ohlc,
            "volume_eligible": volume,
        },
        columns=list(TICK_COLUMNS),
    )
    return frame


def read_lean_quotes(path: str | Path, symbol: str, tz: str, price_scale: float) -> pd.DataFrame:
    """Read a Lean quote-tick zip into L1 quote rows.

    Parameters
    ----------
    path
        ``.../YYYYMMDD_quote.zip``; CSV fields ``ms_since_midnight, bid * price_scale, bid_size,
        ask * price_scale, ask_size, exchange, condition, suspicious`` (no header). Each row
        carries one side of one exchange's quote (multi-exchange, not the NBBO); the absent
        side is 0.
    symbol, tz, price_scale
        As in :func:`read_lean_trades`.

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_kept, 10)``, columns :data:`fbe_pipeline.market.frames.QUOTE_COLUMNS`:
        ``ts_event`` int64 ns UTC; ``ts_recv`` Int64 all ``<NA>``; ``bid_px``/``ask_px``
        (float64, price currency, NaN for the side the row does not carry); ``bid_sz``/``ask_sz``
        (float64, shares, NaN likewise); ``source`` ``"lean"``; ``seq`` int64, the 0-based row
        number in the CSV (kept stable when rows are dropped); ``exchange`` object str.
        Suspicious rows are dropped; the index is ``0..n_kept-1``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a zip, bad file name, or a malformed CSV (field count, non-numeric or negative
        price/size, bad milliseconds, ``suspicious`` other than 0/1).
    """
    path = Path(path)
    day = _file_date(path)
    with _open_zip(path) as zf:
        member = _single_member(zf, path)
        raw = _read_member(zf, member, path, _QUOTE_FIELDS)
    where = f"{path}:{member}"
    ms = _checked_ms(raw["ms"].to_numpy(), where)
    suspicious = _checked_flag(raw["suspicious"].to_numpy(), where)
    sides: dict[str, npt.NDArray[np.float64]] = {}
    for side in ("bid", "ask"):
        px = raw[f"{side}_px"].to_numpy() / float(price_scale)
        sz = raw[f"{side}_sz"].to_numpy()
        _check_non_negative(px, f"{side} price", where)
        _check_non_negative(sz, f"{side} size", where)
        # A zero price is Lean's marker for "this row does not carry the side".
        absent = px == 0.0
        sides[f"{side}_px"] = np.where(absent, np.nan, px)
        sides[f"{side}_sz"] = np.where(absent, np.nan, sz)

    keep = ~suspicious
    n = int(keep.sum())
    frame = pd.DataFrame(
        {
            "symbol": _const(symbol, n),
            "ts_event": _wall_clock_to_utc_ns(day, ms, tz)[keep],
            "ts_recv": _all_na_int64(n),
            "bid_px": sides["bid_px"][keep],
            "bid_sz": sides["bid_sz"][keep],
            "ask_px": sides["ask_px"][keep],
            "ask_sz": sides["ask_sz"][keep],
            "source": _const(SOURCE, n),
            "seq": np.flatnonzero(keep).astype(np.int64),
            "exchange": raw["exchange"].to_numpy(dtype=object)[keep],
        },
        columns=list(QUOTE_COLUMNS),
    )
    return frame


def read_lean_minute_bars(
    path: str | Path, symbol: str, tz: str, price_scale: float
) -> pd.DataFrame:
    """Read a Lean minute trade-bar zip into vendor reference bars.

    Parameters
    ----------
    path
        ``.../minute/YYYYMMDD_trade.zip``; CSV fields ``ms_since_midnight, open, high, low,
        close, volume`` (prices times ``price_scale``, no header). Minutes without trades are
        absent.
    symbol, tz, price_scale
        As in :func:`read_lean_trades`.

    Returns
    -------
    pandas.DataFrame
        Shape ``(n_bars, 7)``, columns :data:`fbe_pipeline.market.frames.REFERENCE_BAR_COLUMNS`:
        ``ts`` (int64 ns UTC, bar open; the bar covers ``[ts, ts + 60 s)``), ``open``,
        ``high``, ``low``, ``close`` (float64, price currency), ``volume`` (float64, shares or
        contracts), in file order.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a zip, bad file name, or a malformed CSV (field count, non-numeric field,
        non-positive price, negative volume, bad milliseconds).
    """
    path = Path(path)
    day = _file_date(path)
    with _open_zip(path) as zf:
        member = _single_member(zf, path)
        raw = _read_member(zf, member, path, _BAR_FIELDS)
    where = f"{path}:{member}"
    ms = _checked_ms(raw["ms"].to_numpy(), where)
    out: dict[str, object] = {
        "symbol": _const(symbol, len(raw)),
        "ts": _wall_clock_to_utc_ns(day, ms, tz),
    }
    for col in ("open", "high", "low", "close"):
        px = raw[col].to_numpy() / float(price_scale)
        _check_positive(px, col, where)
        out[col] = px
    volume = raw["volume"].to_numpy()
    _check_non_negative(volume, "volume", where)
    out["volume"] = volume
    return pd.DataFrame(out, columns=list(REFERENCE_BAR_COLUMNS))


def parse_condition_bits(condition: pd.Series, where: str = "condition") -> npt.NDArray[np.int64]:
    """Parse Lean hex sale-condition strings into their integer bit masks.

    Parameters
    ----------
    condition
        Series of str, shape ``(n,)``: hexadecimal ``TradeConditionFlags`` masks such as
        ``"20004a00"``; ``""`` means no condition (0).
    where
        Location used in error messages.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n,)``.

    Raises
    ------
    ValueError
        A value is not 1 to 16 hexadecimal digits.

    Notes
    -----
    A day holds only a few dozen distinct codes, so each distinct string is parsed once with
    ``int(code, 16)`` and broadcast back through ``pandas.factorize``.
    """
    codes, uniques = pd.factorize(condition, use_na_sentinel=False)
    values = np.empty(len(uniques), dtype=np.int64)
    for i, code in enumerate(uniques):
        text = "" if code is None or (isinstance(code, float) and np.isnan(code)) else str(code)
        if text == "":
            values[i] = 0
        elif _HEX_RE.match(text) and int(text, 16) < 2**63:
            values[i] = int(text, 16)
        else:
            raise ValueError(f"{where}: sale condition {text!r} is not a hexadecimal bit mask")
    return values[codes]


def condition_eligibility(
    bits: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Map Lean ``TradeConditionFlags`` masks to (ohlc_eligible, volume_eligible).

    Parameters
    ----------
    bits
        int64, shape ``(n,)``, from :func:`parse_condition_bits`.

    Returns
    -------
    tuple of numpy.ndarray
        Two bool arrays of shape ``(n,)``: ``ohlc_eligible`` is True when no bit of
        :data:`OHLC_INELIGIBLE_MASK` is set, ``volume_eligible`` when no bit of
        :data:`VOLUME_INELIGIBLE_MASK` is set. The rule and its sources (CTA / UTP last-sale
        eligibility matrices, plus the Intermarket Sweep deviation measured against Lean's
        minute bars) are in the module docstring. Suspicious and zero-size prints are handled
        by :func:`read_lean_trades`, not here.
    """
    bits = np.asarray(bits, dtype=np.int64)
    ohlc = (bits & OHLC_INELIGIBLE_MASK) == 0
    volume = (bits & VOLUME_INELIGIBLE_MASK) == 0
    return ohlc, volume


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _file_date(path: Path) -> date:
    match = _DATE_RE.match(path.name)
    if match is None:
        raise ValueError(f"{path}: file name must start with the date as YYYYMMDD_")
    try:
        day = pd.Timestamp(match.group(1)).date()
    except ValueError as exc:
        raise ValueError(f"{path}: {match.group(1)!r} is not a valid date") from exc
    latest = pd.Timestamp(max_ts_ns(), unit="ns").date()
    if not _MIN_DATE <= day <= latest:
        raise ValueError(f"{path}: file date {day} is outside 1990-01-01 .. tomorrow")
    return day


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileNotFoundError(f"Lean data file not found: {path}")
    try:
        return zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise ValueError(f"{path}: not a valid zip archive: {exc}") from exc


def _csv_members(zf: zipfile.ZipFile, path: Path) -> list[str]:
    members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
    if not members:
        raise ValueError(f"{path}: the zip holds no CSV file")
    return members


def _single_member(zf: zipfile.ZipFile, path: Path) -> str:
    members = _csv_members(zf, path)
    if len(members) != 1:
        raise ValueError(f"{path}: expected one CSV in the zip, found {len(members)}")
    return members[0]


def _read_trade_member(
    zf: zipfile.ZipFile, path: Path, contract: str | None
) -> tuple[str, pd.DataFrame]:
    members = _csv_members(zf, path)
    by_contract: dict[str, str] = {}
    for member in members:
        match = _CONTRACT_RE.search(member)
        if match is not None:
            by_contract[match.group(1)] = member
    if not by_contract:
        if contract is not None:
            raise ValueError(f"{path}: contract={contract!r} given but the zip is not per-contract")
        member = _single_member(zf, path)
        return member, _read_member(zf, member, path, _TRADE_FIELDS)
    if len(by_contract) != len(members):
        raise ValueError(f"{path}: mixes per-contract and other CSV files: {members}")
    if contract is not None:
        if contract not in by_contract:
            raise ValueError(f"{path}: no contract {contract!r}; available: {sorted(by_contract)}")
        member = by_contract[contract]
        return member, _read_member(zf, member, path, _TRADE_FIELDS)
    # Front month = the most traded contract of the day (see read_lean_trades); every member is
    # parsed (and so validated) to know its traded size.
    frames = {
        month: _read_member(zf, member, path, _TRADE_FIELDS)
        for month, member in by_contract.items()
    }
    totals = {month: float(frame["size"].sum()) for month, frame in frames.items()}
    front = min(totals, key=lambda month: (-totals[month], month))
    return by_contract[front], frames[front]


def _read_member(
    zf: zipfile.ZipFile, member: str, path: Path, fields: tuple[str, ...]
) -> pd.DataFrame:
    try:
        data = zf.read(member)
    except _ZIP_ERRORS as exc:
        # Corrupt entries surface as CRC, zlib, EOF, "encrypted" or "unsupported compression".
        raise ValueError(f"{path}:{member}: cannot read the zip entry: {exc}") from exc
    if not data.strip():
        # A day without prints is an empty file, not a malformed one.
        return pd.DataFrame(
            {
                name: pd.Series([], dtype=object if name in _STRING_FIELDS else np.float64)
                for name in fields
            }
        )
    dtypes = {name: (str if name in _STRING_FIELDS else "float64") for name in fields}
    try:
        with warnings.catch_warnings():
            # pandas only warns (and drops data) when every row has more fields than names.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # keep_default_na=False: exchange codes and conditions are verbatim strings, and an
            # empty numeric field must fail the float conversion instead of becoming NaN.
            return pd.read_csv(
                io.BytesIO(data),
                header=None,
                names=list(fields),
                dtype=dtypes,
                keep_default_na=False,
                index_col=False,
                engine="c",
            )
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise ValueError(f"{path}:{member}: {_diagnose(data, fields, exc)}") from exc


def _diagnose(data: bytes, fields: tuple[str, ...], exc: Exception) -> str:
    """Name the first offending line; runs only after the fast parser has failed."""
    text = data.decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        values = line.split(",")
        if len(values) != len(fields):
            return f"line {lineno}: expected {len(fields)} fields, got {len(values)}: {line!r}"
        for name, value in zip(fields, values, strict=True):
            if name in _STRING_FIELDS:
                continue
            try:
                float(value)
            except ValueError:
                return f"line {lineno}: field {name!r} is not numeric: {value!r}"
    return f"malformed CSV: {exc}"


def _checked_ms(ms: npt.NDArray[np.float64], where: str) -> npt.NDArray[np.int64]:
    bad = ~np.isfinite(ms) | (ms < 0) | (ms >= _MS_PER_DAY) | (ms != np.floor(ms))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where}: row {row}: milliseconds since midnight must be an integer in "
            f"[0, {_MS_PER_DAY}), got {ms[row]!r}"
        )
    return ms.astype(np.int64)


def _check_positive(values: npt.NDArray[np.float64], name: str, where: str) -> None:
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: row {row}: {name} must be > 0 and finite, got {values[row]!r}")


def _check_non_negative(values: npt.NDArray[np.float64], name: str, where: str) -> None:
    bad = ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: row {row}: {name} must be >= 0 and finite, got {values[row]!r}")


def _checked_flag(values: npt.NDArray[np.float64], where: str) -> npt.NDArray[np.bool_]:
    bad = (values != 0) & (values != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: row {row}: suspicious must be 0 or 1, got {values[row]!r}")
    return np.asarray(values == 1, dtype=bool)


def _all_na_int64(n: int) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))


def _const(value: str, n: int) -> npt.NDArray[np.object_]:
    out = np.empty(n, dtype=object)
    out[:] = value
    return out


def _wall_clock_to_utc_ns(day: date, ms: npt.NDArray[np.int64], tz: str) -> npt.NDArray[np.int64]:
    """Local wall-clock ``day 00:00 + ms`` in ``tz`` -> int64 ns UTC.

    Lean builds a tick's time as ``date + ms`` in the data time zone and converts it with
    NodaTime's lenient resolver; mirroring that (earlier instant when ambiguous, shift forward
    when skipped) keeps transition days identical to Lean.
    """
    naive = np.datetime64(day, "ns").astype(np.int64) + ms * _NS_PER_MS
    index = pd.DatetimeIndex(naive.view("datetime64[ns]"))
    local = index.tz_localize(
        tz, ambiguous=np.ones(len(index), dtype=bool), nonexistent="shift_forward"
    )
    return np.asarray(local.asi8, dtype=np.int64)
