"""Instruments as configuration: symbol, exchange calendar, time zone, session, tick and lot size.

The shipped list is ``fbe_pipeline/market/instruments.yaml``; instruments registered on this machine
(``fbe load ... --calendar``) live in ``$FBE_HOME/instruments.yaml`` and are merged over it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import exchange_calendars as xcals
import yaml

from fbe_pipeline.settings import paths

SHIPPED = Path(__file__).with_name("instruments.yaml")
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9_.\-]{0,31}$")
# Quote currencies are ISO codes (USD, INR) or venue asset codes (USDT, FDUSD); 12 leaves room
# for the longer asset codes some venues quote in.
_CURRENCY_RE = re.compile(r"^[A-Z0-9]{1,8}$")


class InstrumentError(ValueError):
    """An instrument definition is invalid or a symbol is unknown."""


@dataclass(frozen=True)
class Instrument:
    """One tradable instrument; invariants are checked at construction.

    Attributes
    ----------
    symbol : str
        Upper-case symbol, 1-32 characters of ``A-Z0-9_.-``; also the partition key.
    calendar : str
        An ``exchange_calendars`` calendar name (e.g. ``XNYS``, ``CMES``, ``24/7``).
    tz : str
        IANA time zone of the venue (exchange-local dates and session tags use it).
    tick_size : float
        Minimum price increment, in the price currency, > 0 and finite.
    lot_size : float
        Minimum quantity increment, in units of the instrument (shares, contracts, coins),
        > 0 and finite; default 1.0.
    currency : str
        Price (quote) currency, 1-8 characters of ``A-Z0-9`` (e.g. ``USD``, ``USDT``, ``INR``;
        8 is the width of the operational store's currency column).
    session_open, session_close : datetime.time or None
        Optional local times narrowing each calendar session (``None``: the calendar's own).
    description : str
        Free text.
    session_tags : tuple of (tag, start, end)
        Local-time windows ``[start, end)`` naming parts of the session for regime tags
        (``end`` 00:00 means midnight); bars outside every window are tagged ``other``.

    Raises
    ------
    InstrumentError
        On a malformed symbol or currency, an unknown calendar or time zone, a tick or lot size
        that is not positive and finite, or a session whose open is not before its close.
    """

    symbol: str
    calendar: str
    tz: str
    tick_size: float
    lot_size: float = 1.0
    currency: str = "USD"
    session_open: time | None = None
    session_close: time | None = None
    description: str = ""
    session_tags: tuple[tuple[str, time, time], ...] = ()

    def __post_init__(self) -> None:
        if not _SYMBOL_RE.match(self.symbol):
            raise InstrumentError(f"invalid symbol {self.symbol!r}: use A-Z, 0-9, '_', '.', '-'")
        if self.calendar not in xcals.get_calendar_names(include_aliases=True):
            raise InstrumentError(
                f"{self.symbol}: unknown exchange calendar {self.calendar!r} "
                "(see exchange_calendars.get_calendar_names())"
            )
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InstrumentError(f"{self.symbol}: unknown time zone {self.tz!r}") from exc
        for name in ("tick_size", "lot_size"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise InstrumentError(f"{self.symbol}: {name} must be > 0 and finite, got {value}")
        if not _CURRENCY_RE.match(self.currency):
            raise InstrumentError(
                f"{self.symbol}: invalid currency {self.currency!r}: use 1-8 characters of A-Z, "
                "0-9 (the quote currency, e.g. USD, USDT, INR)"
            )
        if (self.session_open is None) != (self.session_close is None):
            raise InstrumentError(f"{self.symbol}: give both session_open and session_close")
        if self.session_open and self.session_close and self.session_open >= self.session_close:
            raise InstrumentError(f"{self.symbol}: session_open must be before session_close")

    def to_yaml_dict(self) -> dict[str, object]:
        """Return the instrument as a plain dict in the YAML file's layout."""
        out: dict[str, object] = {k: v for k, v in asdict(self).items() if v not in (None, "", ())}
        for key in ("session_open", "session_close"):
            value = out.get(key)
            if isinstance(value, time):
                out[key] = value.strftime("%H:%M")
        if self.session_tags:
            out["session_tags"] = [
                [tag, a.strftime("%H:%M"), b.strftime("%H:%M")] for tag, a, b in self.session_tags
            ]
        return out


def _parse_time(value: object) -> time | None:
    if value is None:
        return None
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise InstrumentError(f"bad session time {value!r}: use HH:MM") from exc


def _time(value: object) -> time:
    parsed = _parse_time(value)
    if parsed is None:
        raise InstrumentError("session tag window times must not be empty")
    return parsed


def _number(raw: dict[str, object], key: str, default: float | None = None) -> float:
    """``raw[key]`` as a float (``default`` when absent); KeyError when absent without one."""
    value = raw[key] if default is None else raw.get(key, default)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InstrumentError(
            f"{raw.get('symbol')}: {key} must be a number, got {value!r}"
        ) from exc


def _from_dict(raw: dict[str, object]) -> Instrument:
    try:
        return Instrument(
            symbol=str(raw["symbol"]),
            calendar=str(raw["calendar"]),
            tz=str(raw["tz"]),
            tick_size=_number(raw, "tick_size"),
            lot_size=_number(raw, "lot_size", 1.0),
            currency=str(raw.get("currency", "USD")),
            session_open=_parse_time(raw.get("session_open")),
            session_close=_parse_time(raw.get("session_close")),
            description=str(raw.get("description", "")),
            session_tags=tuple(
                (str(tag), _time(start), _time(end))
                for tag, start, end in raw.get("session_tags", []) or []  # type: ignore[attr-defined]
            ),
        )
    except KeyError as exc:
        raise InstrumentError(f"instrument entry {raw!r} lacks field {exc.args[0]!r}") from exc


def _read_file(path: Path) -> tuple[Instrument, ...]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ()
    return _parse_file(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _parse_file(path: str, _mtime_ns: int, _size: int) -> tuple[Instrument, ...]:
    # Keyed by modification time and size: every step of a run looks instruments up, and a
    # registration made meanwhile (`fbe load --calendar`) changes both.
    doc = yaml.safe_load(Path(path).read_text()) or {}
    return tuple(_from_dict(entry) for entry in doc.get("instruments", []))


def load_instruments(local_file: Path | None = None) -> dict[str, Instrument]:
    """Return all instruments by symbol: the shipped list, then local registrations over it.

    Parameters
    ----------
    local_file : Path, optional
        Registrations file; defaults to ``$FBE_HOME/instruments.yaml``.

    Raises
    ------
    InstrumentError
        If any entry is invalid.
    """
    found = {i.symbol: i for i in _read_file(SHIPPED)}
    found.update({i.symbol: i for i in _read_file(local_file or paths().instruments)})
    return found


def get_instrument(symbol: str) -> Instrument:
    """Return the instrument for ``symbol``.

    Raises
    ------
    InstrumentError
        If the symbol is not configured.
    """
    instruments = load_instruments()
    try:
        return instruments[symbol]
    except KeyError:
        known = ", ".join(sorted(instruments))
        raise InstrumentError(
            f"unknown symbol {symbol!r} (known: {known}); register it with "
            f"`fbe load FORMAT PATH --symbol {symbol} --calendar CAL`"
        ) from None


def register_instrument(instrument: Instrument, local_file: Path | None = None) -> None:
    """Add ``instrument`` to the local registrations file (no-op if already identical).

    Raises
    ------
    InstrumentError
        If the symbol is already configured with different settings.
    """
    target = local_file or paths().instruments
    existing = load_instruments(target)
    if instrument.symbol in existing:
        if existing[instrument.symbol] != instrument:
            raise InstrumentError(
                f"{instrument.symbol} is already configured differently: "
                f"{existing[instrument.symbol]}"
            )
        return
    entries = [i.to_yaml_dict() for i in _read_file(target)] + [instrument.to_yaml_dict()]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump({"instruments": entries}, sort_keys=False))
