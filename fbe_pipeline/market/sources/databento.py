"""Reader for Databento DBN files of the MBO (market-by-order, L3) schema.

Maps one DBN MBO file to FBE's raw trade ticks and to top-5 L2 book snapshots rebuilt from the
order-by-order events (column layouts: :mod:`fbe_pipeline.market.frames`, SPEC §2).

Source conventions (Databento documentation: "Market by order (MBO)" schema,
https://databento.com/docs/schemas/mbo; "Common fields, enums and types" for ``action``,
``side`` and ``flags``; "MBO snapshots"; the "order tracking" / "limit order book" examples):

* ``action``: ``A`` add, ``C`` cancel (fully or partially, ``size`` is the cancelled quantity),
  ``M`` modify (new price and/or new total size of the order), ``R`` clear the instrument's book,
  ``T`` trade (the aggressing order, one record per trade and price level), ``F`` fill (a resting
  order filled), ``N`` none. ``T`` and ``F`` never change the book: every fill is followed by the
  ``C``/``M`` that removes the filled quantity.
* ``side`` on a ``T`` record is the aggressor: ``A`` (ask) a selling aggressor, ``B`` (bid) a
  buying aggressor, ``N`` none given (e.g. the uncross of an opening auction).
* ``price`` is fixed-point with 1 unit = 1e-9; ``UNDEF_PRICE`` (INT64_MAX) means no price.
* ``flags``: ``F_LAST`` (0x80) marks the last record of one exchange event for the instrument;
  the book is only consistent after it. ``F_SNAPSHOT`` (0x20) marks records of a book snapshot
  replayed at the start of the file, ``F_BAD_TS_RECV`` (0x08) an unreliable ``ts_recv``.

Nothing here writes to the raw store; no Dagster import.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pandas as pd
import zstandard

from fbe_pipeline.market.frames import BOOK_COLUMNS, BOOK_LEVELS, TICK_COLUMNS

__all__ = ["SEQ_STRIDE", "SOURCE", "read_databento_mbo"]

logger = logging.getLogger(__name__)

SOURCE = "databento"

#: ``seq`` = ``sequence * SEQ_STRIDE + n``, ``n`` = 0-based position of the record among the
#: file's records with the same venue ``sequence`` (one exchange message normalises into many
#: records, e.g. one ``T`` per price level of a sweep, all carrying the message's sequence).
SEQ_STRIDE = 100_000

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DBN_MAGIC = b"DBN"

_INT64_LIMIT = 2**63
_MBO_RTYPE = 0xA0
_MBO_SIZE = 56
#: Bytes before the metadata: "DBN", the version byte and the u32 length of the metadata.
_PRELUDE = 8

_AGGRESSOR_SIDE = {"A": "sell", "B": "buy", "N": "unknown"}


def read_databento_mbo(path: Path | str, symbol: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a Databento MBO file into raw trade ticks and top-5 L2 book snapshots.

    Parameters
    ----------
    path
        A DBN file of schema ``mbo``, zstd-compressed (``*.dbn.zst``) or plain (``*.dbn``).
    symbol
        FBE instrument symbol written to the ``symbol`` column of both frames. When the file
        holds several instruments, it must be a raw symbol of the file's symbology mappings
        (e.g. ``"ESH4"``) so the instrument can be selected; with one instrument any name works.

    Returns
    -------
    ticks : pandas.DataFrame
        Shape ``(n_trades, 12)``, columns exactly ``frames.TICK_COLUMNS``; one row per ``T``
        record of the instrument. ``F`` records are not rows: they are the per-order fills of
        the same trades and would double count (on CME they may list both the aggressing and
        the resting orders). Records with an undefined price or size 0 are dropped.

        ``ts_event`` int64 (ns since the epoch, UTC, matching-engine time); ``ts_recv`` Int64
        (ns UTC, Databento capture time, ``<NA>`` when undefined or flagged ``F_BAD_TS_RECV``);
        ``price`` float64 (index points for ES, i.e. fixed-point / 1e9); ``size`` float64
        (contracts); ``side`` ``buy``/``sell``/``unknown`` from the aggressor side (``B`` →
        buy, ``A`` → sell, ``N`` → unknown); ``source`` ``"databento"``; ``seq`` int64, see
        below; ``exchange`` the dataset's venue prefix (``"GLBX"`` for ``GLBX.MDP3``);
        ``condition`` the record's ``flags`` byte as a decimal string (``"0"`` for plain
        trades); ``ohlc_eligible`` and ``volume_eligible`` True.
    books : pandas.DataFrame
        Shape ``(n_snapshots, 25)``, columns exactly ``frames.BOOK_COLUMNS``. One row after
        each record flagged ``F_LAST`` whose event changed the top 5 levels of either side
        (identical consecutive snapshots are not repeated). ``bid_px_1`` is the highest bid,
        ``ask_px_1`` the lowest ask, prices float64 in index points, sizes float64 the
        aggregate resting contracts at the level, NaN for an empty level. ``ts_event``,
        ``ts_recv`` and ``seq`` are those of the ``F_LAST`` record. Records of the initial
        book snapshot (``F_SNAPSHOT``) only seed the book: their ``ts_event`` is each order's
        original entry time, so stamping the seeded book with it would leak state into the
        past; the seeded book first appears with the first live event.

        Both frames are sorted by ``(ts_event, seq)`` with a fresh RangeIndex.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Message starting with the path: the file is not (zstd-compressed) DBN, is truncated or
        corrupt (including records that are not MBO records), is not of schema ``mbo``, holds
        several instruments of which ``symbol`` does not select one, or has a record with an
        undefined or out-of-int64 ``ts_event``, an out-of-int64 ``ts_recv``, a non-positive
        price on an ``A``/``M``/``T`` record or no price on an ``A``/``M`` record. (The
        calendar range of the timestamps is checked by
        :func:`fbe_pipeline.market.ingest.load_file`.)

    Notes
    -----
    ``seq`` is ``sequence * SEQ_STRIDE + n`` where ``sequence`` is the venue sequence number of
    the record and ``n`` the 0-based position of the record among the records of the file with
    the same ``sequence``, in file order. Several trades share one venue sequence number (a
    sweep over several price levels is one exchange message), so the raw ``sequence`` is not
    unique; the composite is, is deterministic and keeps file order within equal ``ts_event``.

    Book reconstruction follows Databento's order-book example: ``A`` inserts an order, ``C``
    reduces it by the cancelled size (removing it at 0), ``M`` sets its new price and size (an
    unknown order id is treated as an add), ``R`` empties the book; ``T``, ``F`` and ``N`` leave
    it unchanged. Top-of-book-only records (``F_TOB``, not used by CME Globex) are not
    supported. The whole file is decompressed in memory.
    """
    meta, records = _decode(Path(path))
    instrument_id = _select_instrument(meta, records, symbol, path)
    exchange = str(meta.dataset).split(".", 1)[0]

    seqs = _composite_seqs(records, path)
    tick_rows: list[tuple[int, int | None, int, int, str, int, int]] = []
    book = _Book()
    book_rows: list[tuple[int, int | None, int, tuple[int | None, ...]]] = []
    last_top: tuple[int | None, ...] | None = None
    n_skipped_trades = 0

    for i, (rec, seq) in enumerate(zip(records, seqs, strict=True)):
        if rec.instrument_id != instrument_id:
            continue
        action = _char(rec.action)
        flags = int(rec.flags)
        _check_record(rec, action, flags, i, path)
        if action == "T":
            if rec.price == dbn.UNDEF_PRICE or rec.size == 0:
                n_skipped_trades += 1
                continue
            ts_recv = _ts_recv(rec.ts_recv, flags)
            side = _char(rec.side)
            tick_rows.append((rec.ts_event, ts_recv, rec.price, rec.size, side, seq, flags))
        elif action != "F":
            book.apply(action, _char(rec.side), rec.price, rec.size, rec.order_id)
        if flags & dbn.F_LAST and not flags & dbn.F_SNAPSHOT:
            top = book.top()
            if top != last_top:
                book_rows.append((rec.ts_event, _ts_recv(rec.ts_recv, flags), seq, top))
                last_top = top

    if n_skipped_trades:
        logger.warning("%s: skipped %d trades without price or size", path, n_skipped_trades)
    book.log_anomalies(str(path))
    return (
        _ticks_frame(tick_rows, symbol, exchange),
        _books_frame(book_rows, symbol),
    )


class _Book:
    """Per-price-level order book of one instrument, prices as fixed-point ints."""

    def __init__(self) -> None:
        self.orders: dict[int, tuple[str, int, int]] = {}
        # Level maps per side plus ascending price lists, so the top 5 is a slice, not a sort.
        self.levels: dict[str, dict[int, int]] = {"B": {}, "A": {}}
        self.prices: dict[str, list[int]] = {"B": [], "A": []}
        self.n_unknown_cancels = 0
        self.n_duplicate_adds = 0
        self.n_sideless = 0

    def apply(self, action: str, side: str, price: int, size: int, order_id: int) -> None:
        """Apply one MBO event (``R`` clear, ``A`` add, ``C`` cancel, ``M`` modify); trades and
        fills leave the book to the cancel/modify that follows them."""
        if action == "R":
            self.orders.clear()
            for s in ("B", "A"):
                self.levels[s].clear()
                self.prices[s].clear()
        elif action == "A":
            if side not in self.levels:
                self.n_sideless += 1
                return
            if order_id in self.orders:
                self.n_duplicate_adds += 1
                self._remove(order_id)
            self._insert(order_id, side, price, size)
        elif action == "C":
            old = self.orders.get(order_id)
            if old is None:
                self.n_unknown_cancels += 1
                return
            old_side, old_price, old_size = old
            self._remove(order_id)
            if old_size > size:
                self._insert(order_id, old_side, old_price, old_size - size)
        elif action == "M":
            old = self.orders.get(order_id)
            if old is not None:
                self._remove(order_id)
                if side not in self.levels:
                    side = old[0]
            elif side not in self.levels:
                self.n_sideless += 1
                return
            if size > 0:
                self._insert(order_id, side, price, size)

    def _insert(self, order_id: int, side: str, price: int, size: int) -> None:
        self.orders[order_id] = (side, price, size)
        level = self.levels[side]
        if price in level:
            level[price] += size
        else:
            level[price] = size
            insort(self.prices[side], price)

    def _remove(self, order_id: int) -> None:
        side, price, size = self.orders.pop(order_id)
        level = self.levels[side]
        remaining = level[price] - size
        if remaining > 0:
            level[price] = remaining
        else:
            del level[price]
            prices = self.prices[side]
            del prices[bisect_left(prices, price)]

    def top(self) -> tuple[int | None, ...]:
        """Top levels as (bid px x5, bid sz x5, ask px x5, ask sz x5), None for empty levels."""
        bid_px: list[int | None] = list(self.prices["B"][: -BOOK_LEVELS - 1 : -1])
        ask_px: list[int | None] = list(self.prices["A"][:BOOK_LEVELS])
        bids, asks = self.levels["B"], self.levels["A"]
        bid_sz: list[int | None] = [bids[p] for p in bid_px if p is not None]
        ask_sz: list[int | None] = [asks[p] for p in ask_px if p is not None]
        pad: list[int | None] = [None] * BOOK_LEVELS
        return tuple(
            (bid_px + pad)[:BOOK_LEVELS]
            + (bid_sz + pad)[:BOOK_LEVELS]
            + (ask_px + pad)[:BOOK_LEVELS]
            + (ask_sz + pad)[:BOOK_LEVELS]
        )

    def log_anomalies(self, where: str) -> None:
        """Log, once per file, the events the rebuild had to ignore."""
        if self.n_unknown_cancels or self.n_duplicate_adds or self.n_sideless:
            logger.warning(
                "%s: book rebuild ignored %d cancels of unknown orders, %d duplicate adds, "
                "%d adds/modifies without a side",
                where,
                self.n_unknown_cancels,
                self.n_duplicate_adds,
                self.n_sideless,
            )


def _decode(path: Path) -> tuple[dbn.Metadata, list[dbn.MBOMsg]]:
    if not path.exists():
        raise FileNotFoundError(f"Databento DBN file not found: {path}")
    raw = path.read_bytes()
    if raw.startswith(_ZSTD_MAGIC):
        raw = _zstd_decompress(raw, path)
    if not raw.startswith(_DBN_MAGIC):
        raise ValueError(f"{path}: not a DBN file (neither zstd-compressed DBN nor plain DBN)")
    if len(raw) < _PRELUDE:
        raise ValueError(f"{path}: DBN data ends inside the metadata header (truncated file?)")
    meta_end = _PRELUDE + int.from_bytes(raw[4:_PRELUDE], "little")
    if len(raw) < meta_end:
        raise ValueError(f"{path}: DBN data ends inside the metadata (truncated file?)")

    # Metadata first, then the records once their framing is known to be sound: databento-dbn
    # panics on a record shorter than its type (e.g. a flipped length byte) instead of raising.
    decoder = dbn.DBNDecoder()
    decoded = _decode_part(decoder, raw[:meta_end], path)
    if len(decoded) != 1 or not isinstance(decoded[0], dbn.Metadata):
        raise ValueError(f"{path}: DBN data without metadata header")
    meta = decoded[0]
    if meta.schema != dbn.Schema.MBO:
        raise ValueError(f"{path}: DBN schema is {meta.schema!s}, expected 'mbo' (market by order)")
    body = raw[meta_end:]
    _check_framing(body, _MBO_SIZE + (8 if meta.ts_out else 0), path)
    decoded = _decode_part(decoder, body, path)
    if decoder.buffer():
        raise ValueError(f"{path}: DBN data ends inside a record (truncated file?)")
    records = [rec for rec in decoded if isinstance(rec, dbn.MBOMsg)]
    if len(records) != len(decoded):
        others = sorted({type(rec).__name__ for rec in decoded} - {"MBOMsg"})
        raise ValueError(f"{path}: MBO file also holds records of type {others}")
    return meta, records


def _decode_part(decoder: dbn.DBNDecoder, data: bytes, path: Path) -> list[object]:
    try:
        decoder.write(data)
        return list(decoder.decode())
    except dbn.DBNError as exc:
        raise ValueError(f"{path}: cannot decode DBN data: {exc}") from exc
    except BaseException as exc:
        # databento-dbn panics (pyo3 PanicException, a BaseException) on some malformed input
        # instead of raising DBNError; anything else is not ours to swallow.
        if type(exc).__name__ != "PanicException":
            raise
        raise ValueError(f"{path}: cannot decode DBN data: {exc}") from exc


def _check_framing(body: bytes, size: int, path: Path) -> None:
    """Every record after the metadata must be an MBO record of ``size`` bytes."""
    records = np.frombuffer(body, dtype=np.uint8)
    n = len(records) // size
    heads = records[: n * size].reshape(n, size)[:, :2]
    bad = (heads[:, 0].astype(np.int64) * 4 != size) | (heads[:, 1] != _MBO_RTYPE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: record {i} has rtype {int(heads[i, 1]):#04x} and length "
            f"{int(heads[i, 0]) * 4}, not an MBO record (rtype {_MBO_RTYPE:#04x}, {size} bytes)"
        )
    if len(records) != n * size:
        raise ValueError(f"{path}: DBN data ends inside a record (truncated file?)")


def _check_record(rec: dbn.MBOMsg, action: str, flags: int, index: int, path: Path | str) -> None:
    # Only what would crash the frames or store garbage is refused here; the calendar range of
    # the timestamps is checked by ingest for every format.
    if rec.ts_event >= _INT64_LIMIT:
        raise ValueError(
            f"{path}: record {index}: ts_event {rec.ts_event} is undefined or beyond int64"
        )
    if (
        rec.ts_recv != dbn.UNDEF_TIMESTAMP
        and rec.ts_recv >= _INT64_LIMIT
        and not (flags & dbn.F_BAD_TS_RECV)
    ):
        raise ValueError(f"{path}: record {index}: ts_recv {rec.ts_recv} is beyond int64")
    if action in ("A", "M", "T") and rec.price != dbn.UNDEF_PRICE and rec.price <= 0:
        raise ValueError(
            f"{path}: record {index}: {action} price must be > 0, got {rec.price / 1e9!r}"
        )
    if action in ("A", "M") and rec.price == dbn.UNDEF_PRICE:
        raise ValueError(f"{path}: record {index}: {action} record without a price")


def _zstd_decompress(data: bytes, path: Path) -> bytes:
    # Frame by frame: Databento writes several zstd frames, and only a per-frame decompressor
    # reports a frame cut short (stream readers silently return what they got).
    parts: list[bytes] = []
    try:
        while data:
            frame = zstandard.ZstdDecompressor().decompressobj()
            parts.append(frame.decompress(data))
            if not frame.eof:
                raise ValueError(f"{path}: zstd stream ends inside a frame (truncated file?)")
            data = frame.unused_data
    except zstandard.ZstdError as exc:
        raise ValueError(f"{path}: cannot zstd-decompress: {exc}") from exc
    return b"".join(parts)


def _select_instrument(
    meta: dbn.Metadata, records: Sequence[dbn.MBOMsg], symbol: str, path: Path | str
) -> int:
    ids = sorted({rec.instrument_id for rec in records})
    if len(ids) <= 1:
        return ids[0] if ids else 0
    mapped = {
        int(interval["symbol"])
        for interval in dict(meta.mappings).get(symbol, [])
        if str(interval["symbol"]).isdigit()
    }
    chosen = mapped.intersection(ids)
    if len(chosen) != 1:
        raise ValueError(
            f"{path}: file holds instruments {ids}; symbol {symbol!r} does not map to exactly "
            f"one of them (mappings: {sorted(dict(meta.mappings))})"
        )
    return chosen.pop()


def _composite_seqs(records: Sequence[dbn.MBOMsg], path: Path | str) -> list[int]:
    seen: dict[int, int] = {}
    out: list[int] = []
    for rec in records:
        n = seen.get(rec.sequence, 0)
        if n >= SEQ_STRIDE:
            raise ValueError(
                f"{path}: more than {SEQ_STRIDE} records share sequence {rec.sequence}; "
                "seq not unique"
            )
        seen[rec.sequence] = n + 1
        out.append(rec.sequence * SEQ_STRIDE + n)
    return out


def _char(value: Enum | str) -> str:
    return value if isinstance(value, str) else str(value.value)


def _ts_recv(ts_recv: int, flags: int) -> int | None:
    if ts_recv == dbn.UNDEF_TIMESTAMP or flags & dbn.F_BAD_TS_RECV:
        return None
    return ts_recv


def _ts_recv_array(values: Sequence[int | None]) -> pd.arrays.IntegerArray:
    return pd.array(list(values), dtype="Int64")


def _ticks_frame(
    rows: Sequence[tuple[int, int | None, int, int, str, int, int]], symbol: str, exchange: str
) -> pd.DataFrame:
    n = len(rows)
    ts_event, ts_recv, price, size, side, seq, flags = zip(*rows, strict=True) if rows else [()] * 7
    frame = pd.DataFrame(
        {
            "symbol": np.full(n, symbol, dtype=object),
            "ts_event": np.array(ts_event, dtype=np.int64),
            "ts_recv": _ts_recv_array(ts_recv),
            # Divide rather than multiply by 1e-9: the quotient is the correctly rounded double.
            "price": np.array(price, dtype=np.float64) / dbn.FIXED_PRICE_SCALE,
            "size": np.array(size, dtype=np.float64),
            "side": np.array([_AGGRESSOR_SIDE.get(s, "unknown") for s in side], dtype=object),
            "source": np.full(n, SOURCE, dtype=object),
            "seq": np.array(seq, dtype=np.int64),
            "exchange": np.full(n, exchange, dtype=object),
            "condition": np.array([str(f) for f in flags], dtype=object),
            "ohlc_eligible": np.ones(n, dtype=bool),
            "volume_eligible": np.ones(n, dtype=bool),
        },
        columns=list(TICK_COLUMNS),
    )
    return _sorted(frame)


def _books_frame(
    rows: Sequence[tuple[int, int | None, int, tuple[int | None, ...]]], symbol: str
) -> pd.DataFrame:
    n = len(rows)
    # None -> NaN in the float conversion is what marks an empty level.
    levels = np.array([r[3] for r in rows], dtype=np.float64).reshape(n, 4 * BOOK_LEVELS)
    k = BOOK_LEVELS
    levels[:, 0:k] /= dbn.FIXED_PRICE_SCALE
    levels[:, 2 * k : 3 * k] /= dbn.FIXED_PRICE_SCALE
    level_columns = BOOK_COLUMNS[3 : 3 + 4 * k]
    data: dict[str, object] = {
        "symbol": np.full(n, symbol, dtype=object),
        "ts_event": np.array([r[0] for r in rows], dtype=np.int64),
        "ts_recv": _ts_recv_array([r[1] for r in rows]),
    }
    data.update({col: levels[:, i] for i, col in enumerate(level_columns)})
    data["source"] = np.full(n, SOURCE, dtype=object)
    data["seq"] = np.array([r[2] for r in rows], dtype=np.int64)
    return _sorted(pd.DataFrame(data, columns=list(BOOK_COLUMNS)))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)
