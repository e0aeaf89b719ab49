"""Bad-input corpora: property-based malformed inputs for every loader format (issue 6).

Each format starts from a small slice of a real sample file (``FBE_SAMPLE_DATA``) and
hypothesis applies 1 to 4 mutations: field values replaced by hostile ones (NaN, inf, negative,
zero, text, huge fields, non-ASCII), timestamps far outside the session or absurd, rows deleted,
duplicated, swapped, shuffled or cut, columns dropped, duplicated or swapped, other encodings,
CRLF, BOM, and byte flips / insertions / deletions / truncations of the file (and, for Lean,
of the zip or of the CSV inside it; for DBN, of the plain or the zstd-compressed stream).

Every input must end in one of two outcomes, through :func:`fbe_pipeline.market.ingest.load_file`:

* **loaded**: every stored object respects the loader rules (price > 0 and finite, size >= 0
  and finite, timestamps 1990..now + 1 day, the frame layout of :mod:`fbe_pipeline.market.frames`),
  the manifest rows add up to the rows read, the store verifies; when only row order,
  duplication or deletion changed (plus CRLF line ends), the stored content equals the
  original rows mapped through the same row operations;
* **rejected**: a ValueError, FileNotFoundError or RawStoreError whose message names the file,
  the manifest unchanged and the store verifying.

Any other exception fails the test. Each format runs ``EXAMPLES`` examples (derandomized, no
example database, so CI is reproducible) and asserts that at least 1,000 inputs were tried;
the per-format counts and outcome split are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fbe_pipeline.market.frames import QUOTE_COLUMNS, REFERENCE_BAR_COLUMNS, TICK_COLUMNS
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import Instrument, get_instrument
from fbe_pipeline.market.sources.checks import MIN_TS_NS, max_ts_ns
from fbe_pipeline.market.sources.databento import _zstd_decompress
from fbe_pipeline.storage.integrity import verify_store
from fbe_pipeline.storage.store import LocalRawStore, RawStoreError


@pytest.fixture(autouse=True)
def _isolated_home(fbe_home: Path) -> Path:
    # get_instrument merges $FBE_HOME/instruments.yaml; keep a developer's registrations out.
    return fbe_home


EXAMPLES = int(os.environ.get("FBE_CORPUS_EXAMPLES", "1000"))
MIN_TRIED = min(EXAMPLES, 1000)
SLICE_ROWS = 120
DBN_WINDOW = (9590, 9790)  # 200 MBO records around the file's first trades

TARDIS = "tardis/tardis_binance-futures_BTCUSDT_{kind}_2020-02-22.csv"
DBN_FILE = "databento/esh4-glbx-mdp3-20231225.mbo.dbn.zst"

EXPECTED_ERRORS = (ValueError, FileNotFoundError, RawStoreError)
DAY_US = 86_400_000_000
NOW_US = time.time_ns() // 1000

# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------

IDX = st.integers(min_value=0, max_value=10_000)
HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "Infinity",
            "-1",
            "0",
            "-0",
            "1e308",
            "1e400",
            "-1e-300",
            "abc",
            "1.5",
            "0x1A",
            " 12 ",
            "1_000",
            "9" * 30,
            "9" * 5_000,
            "x" * 100_000,
            "1,2",
            '"',
            '"unterminated',
            "\x00",
            "é",
            "€",
            "\ufeff",
            "true",
            "None",
            "null",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)
PRESERVING = frozenset({"delete", "duplicate", "swap", "shuffle", "keep_first", "crlf"})
ROW_KINDS = frozenset(
    {"set", "set_ts", "delete", "duplicate", "swap", "shuffle", "keep_first"}
    | {"drop_col", "dup_col", "swap_cols"}
)

HOSTILE_ROW_OPS = [
    st.tuples(st.just("set"), IDX, IDX, HOSTILE_TEXT),
    st.tuples(st.just("set_ts"), IDX, IDX, IDX),
    st.tuples(st.just("drop_col"), IDX),
    st.tuples(st.just("dup_col"), IDX),
    st.tuples(st.just("swap_cols"), IDX, IDX),
]
PRESERVING_OPS = [
    st.tuples(st.just("delete"), IDX),
    st.tuples(st.just("duplicate"), IDX),
    st.tuples(st.just("swap"), IDX, IDX),
    st.tuples(st.just("shuffle"), IDX),
    st.tuples(st.just("keep_first"), st.integers(min_value=0, max_value=SLICE_ROWS + 5)),
]
#: one branch for every row-order change, so they do not crowd out the hostile values
#: (``.map`` keeps hypothesis from flattening the branch into one branch per operation)
ANY_PRESERVING_OP = st.one_of(*PRESERVING_OPS).map(tuple)
ROW_OPS = [*HOSTILE_ROW_OPS, ANY_PRESERVING_OP]
BYTE_OPS = [
    st.tuples(st.just("flip"), IDX, st.integers(0, 7)),
    st.tuples(st.just("truncate"), IDX),
    st.tuples(st.just("insert"), IDX, st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("cut"), IDX, st.integers(1, 16)),
]
TEXT_OPS = [
    st.tuples(st.just("encoding"), st.sampled_from(["utf-16", "latin-1", "cp1252", "utf-8-sig"])),
    st.tuples(st.just("crlf")),
]


def _apply_row_ops(
    rows: list[tuple[int, list[str]]],
    ops: list[tuple[Any, ...]],
    ts_cols: list[int],
    far: list[str],
) -> list[tuple[int, list[str]]]:
    """Apply row/column ops to ``(original index, fields)`` rows (copies)."""
    rows = [(i, list(fields)) for i, fields in rows]
    for op in ops:
        kind = op[0]
        if not rows and kind not in ("keep_first",):
            continue
        n = len(rows)
        if kind == "set":
            r = rows[op[1] % n][1]
            if r:
                r[op[2] % len(r)] = op[3]
        elif kind == "set_ts":
            r = rows[op[1] % n][1]
            col = ts_cols[op[2] % len(ts_cols)]
            if col < len(r):
                r[col] = far[op[3] % len(far)]
        elif kind == "delete":
            del rows[op[1] % n]
        elif kind == "duplicate":
            i = op[1] % n
            rows.insert(i + 1, (rows[i][0], list(rows[i][1])))
        elif kind == "swap":
            i, j = op[1] % n, op[2] % n
            rows[i], rows[j] = rows[j], rows[i]
        elif kind == "shuffle":
            random.Random(op[1]).shuffle(rows)
        elif kind == "keep_first":
            rows = rows[: op[1]]
        elif kind in ("drop_col", "dup_col", "swap_cols"):
            width = len(rows[0][1])
            c = op[1] % width
            for _, r in rows:
                if kind == "drop_col" and c < len(r):
                    del r[c]
                elif kind == "dup_col" and c < len(r):
                    r.insert(c, r[c])
                elif kind == "swap_cols":
                    d = op[2] % width
                    if c < len(r) and d < len(r):
                        r[c], r[d] = r[d], r[c]
    return rows


def _apply_byte_ops(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "flip" and buf:
            buf[op[1] % len(buf)] ^= 1 << op[2]
        elif kind == "truncate":
            buf = buf[: op[1] % (len(buf) + 1)]
        elif kind == "insert":
            pos = op[1] % (len(buf) + 1)
            buf[pos:pos] = op[2]
        elif kind == "cut" and buf:
            pos = op[1] % len(buf)
            del buf[pos : pos + op[2]]
    return bytes(buf)


def _encode(text: str, ops: list[tuple[Any, ...]]) -> bytes:
    encoding = "utf-8"
    for op in ops:
        if op[0] == "crlf":
            text = text.replace("\n", "\r\n")
        elif op[0] == "encoding":
            encoding = op[1]
    return text.encode(encoding, errors="replace")


# --------------------------------------------------------------------------------------------
# Seeds: small slices of the real sample files
# --------------------------------------------------------------------------------------------


@dataclass
class TextSeed:
    """A CSV slice: optional header, rows of text fields, and how to check a clean load."""

    fmt: str
    symbol: str
    file_name: str
    header: list[str] | None
    rows: list[list[str]]
    ts_cols: list[int]
    far_ts: list[str]
    zipped: bool = False
    #: per original row, the value tuple the reader yields for it (None: row dropped)
    reference: list[tuple[Any, ...] | None] = field(default_factory=list)


def _data_root() -> Path:
    root = Path(
        os.environ.get(
            "FBE_SAMPLE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
        )
    )
    if not (root / "lean").is_dir():
        pytest.skip(f"sample data not found at {root}; set FBE_SAMPLE_DATA to shared/data")
    return root


def _zip_lines(path: Path, n: int) -> list[list[str]]:
    with zipfile.ZipFile(path) as zf:
        [member] = zf.namelist()
        text = zf.read(member).decode()
    return [line.split(",") for line in text.splitlines()[:n]]


def _lean_far_ms() -> list[str]:
    # ms since local midnight: outside the session but valid, then invalid ones.
    return ["0", "1", "86399999", "3600000", "72000000", "-1", "86400000", "1e12", "3600000.5"]


def _us_far(first_us: int) -> list[str]:
    return [
        str(first_us + 10 * DAY_US),  # another day: valid
        str(first_us - 365 * DAY_US),  # a year earlier: valid
        str(first_us + 12 * 3_600_000_000),  # 12 h later: valid
        "631152000000000",  # exactly 1990-01-01: valid
        str(NOW_US - DAY_US),  # yesterday: valid
        "631151999999999",
        "0",
        "-1",
        str(NOW_US + 3 * DAY_US),
        "32503680000000000",  # year 3000
        str(2**63 - 1),
        str(2**63),
        str(2**64),
        "1.5e15",
        f"{first_us}.5",
        "",
    ]


def _iso_far() -> list[str]:
    return [
        "2013-10-07T03:00:00-04:00",  # before the open: valid
        "2013-10-12T12:00:00Z",  # a Saturday: valid
        "1990-01-01T00:00:00Z",
        "2020-02-29T23:59:59.999999999+05:30",
        "1970-01-01T00:00:00Z",
        "1989-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2013-10-07T10:00:00",
        "2013-13-45T10:00:00Z",
        "NaT",
        "",
        "1381152600000000000",
    ]


def _reference(seed: TextSeed, frame: pd.DataFrame, key: str) -> list[tuple[Any, ...] | None]:
    """Map each seed row to the value tuple the reader produced for it."""
    values = [_row_values(seed.fmt, rec) for rec in frame.to_dict("records")]
    out: list[tuple[Any, ...] | None] = [None] * len(seed.rows)
    if key == "order":
        for i, v in enumerate(values):
            out[i] = v
    else:
        ids = frame["seq"].tolist()
        if key == "id":
            by_id = {int(r[4]): i for i, r in enumerate(seed.rows)}
            ids = [by_id[s] for s in ids]
        for s, v in zip(ids, values, strict=True):
            out[int(s)] = v
    return out


def _row_values(fmt: str, rec: dict[str, Any]) -> tuple[Any, ...]:
    if fmt == "lean-minute":
        cols: tuple[str, ...] = REFERENCE_BAR_COLUMNS
    elif fmt in ("lean-quotes", "tardis-quotes"):
        cols = QUOTE_COLUMNS
    else:
        cols = TICK_COLUMNS
    out = []
    for c in cols:
        if c == "seq":
            continue
        v = rec[c]
        out.append("<NA>" if v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v)
    return tuple(out)


@cache
def _seed(fmt: str) -> TextSeed:
    root = _data_root()
    if fmt == "lean-trades":
        rows = _zip_lines(root / "lean/spy/tick/20131007_trade.zip", SLICE_ROWS)
        seed = TextSeed(fmt, "SPY", "20131007_trade.zip", None, rows, [0], _lean_far_ms(), True)
        key = "seq"
    elif fmt == "lean-quotes":
        rows = _zip_lines(root / "lean/bac/tick/20131007_quote.zip", SLICE_ROWS)
        seed = TextSeed(fmt, "BAC", "20131007_quote.zip", None, rows, [0], _lean_far_ms(), True)
        key = "seq"
    elif fmt == "lean-minute":
        rows = _zip_lines(root / "lean/spy/minute/20131007_trade.zip", SLICE_ROWS)
        seed = TextSeed(fmt, "SPY", "20131007_trade.zip", None, rows, [0], _lean_far_ms(), True)
        key = "order"
    elif fmt in ("tardis-trades", "tardis-quotes"):
        kind = fmt.split("-")[1]
        lines = (root / TARDIS.format(kind=kind)).read_text().splitlines()
        header, rows = lines[0].split(","), [line.split(",") for line in lines[1 : SLICE_ROWS + 1]]
        far = _us_far(int(rows[0][2]))
        seed = TextSeed(fmt, "BTCUSDT", f"corpus_{kind}.csv", header, rows, [2, 3], far)
        key = "id" if kind == "trades" else "seq"
    elif fmt == "csv":
        seed = TextSeed(fmt, "SPY", "corpus_trades.csv", *_generic_rows(root), [0, 4], _iso_far())
        key = "seq"
    else:
        raise ValueError(fmt)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / seed.file_name
        path.write_bytes(_serialize(seed, seed.rows, [], [], False))
        store = LocalRawStore(Path(tmp) / "raw")
        load_file(store, fmt, path, get_instrument(seed.symbol))
        frame = pd.concat([store.read_frame(e.key) for e in store.manifest()], ignore_index=True)
    seed.reference = _reference(seed, frame, key)
    assert sum(v is not None for v in seed.reference) == len(frame)
    return seed


def _generic_rows(root: Path) -> tuple[list[str], list[list[str]]]:
    """The SPY Lean slice rewritten in FBE's generic CSV layout (ISO timestamps, UTC)."""
    lean = _zip_lines(root / "lean/spy/tick/20131007_trade.zip", SLICE_ROWS)
    midnight = pd.Timestamp("2013-10-07", tz="America/New_York")
    header = ["timestamp", "price", "size", "side", "ts_recv", "seq", "exchange", "condition"]
    rows = []
    for i, r in enumerate(lean):
        ts = (midnight + pd.Timedelta(milliseconds=int(r[0]))).tz_convert("UTC")
        recv = ts + pd.Timedelta(microseconds=250 + i)
        side = ("buy", "sell", "unknown")[i % 3]
        price = f"{int(r[1]) / 10_000:.4f}"
        rows.append([ts.isoformat(), price, r[2], side, recv.isoformat(), str(i), r[3], r[4]])
    return header, rows


def _serialize(
    seed: TextSeed,
    rows: list[list[str]],
    text_ops: list[tuple[Any, ...]],
    byte_ops: list[tuple[Any, ...]],
    outer: bool,
    member: str = "plain",
) -> bytes:
    lines = ([",".join(seed.header)] if seed.header is not None else []) + [
        ",".join(r) for r in rows
    ]
    data = _encode("\n".join(lines) + "\n" if lines else "", text_ops)
    if not seed.zipped:
        return _apply_byte_ops(data, byte_ops)
    if not outer:
        data = _apply_byte_ops(data, byte_ops)
    name = seed.file_name.replace(".zip", ".csv")
    buf = io.BytesIO()
    method = zipfile.ZIP_STORED if member == "stored" else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", method) as zf:
        if member == "txt":
            zf.writestr(name.replace(".csv", ".txt"), data)
        elif member == "contract":
            zf.writestr(name.replace(".csv", "_201312.csv"), data)
        else:
            zf.writestr(name, data)
        if member == "two":
            zf.writestr("other.csv", data)
    out = buf.getvalue()
    return _apply_byte_ops(out, byte_ops) if outer else out


# --------------------------------------------------------------------------------------------
# The check of one input
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcome counts of one format's corpus."""

    fmt: str
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def tried(self) -> int:
        """Inputs tried."""
        return sum(self.outcomes[k] for k in ("loaded", "rejected", "other"))

    def line(self) -> str:
        """One summary line."""
        top = ", ".join(f"{r} x{n}" for r, n in self.reasons.most_common(6))
        return (
            f"{self.fmt}: {self.tried} inputs, loaded {self.outcomes['loaded']} "
            f"(exact content {self.outcomes['exact']}), rejected {self.outcomes['rejected']}, "
            f"other {self.outcomes['other']}; top reasons: {top}"
        )


def _reason(message: str, name: str) -> str:
    """The message without file name, zip member, numbers and details: a reason category."""
    text = message.split(name, 1)[-1].lstrip(":").strip()
    text = re.sub(r"^[^\s:]*\.csv:\s*", "", text)  # Lean: the zip member
    for sep in (":", "(", ",", ";"):
        text = text.split(sep, 1)[0]
    words = [w for w in text.split() if not any(ch.isdigit() for ch in w)]
    return " ".join(words[:6])


def _check_frame(kind: str, frame: pd.DataFrame) -> None:
    hi = max_ts_ns()
    if kind == "refbars":
        assert tuple(frame.columns) == REFERENCE_BAR_COLUMNS
        ts = frame["ts"].to_numpy(np.int64)
        for col in ("open", "high", "low", "close"):
            px = frame[col].to_numpy(np.float64)
            assert (np.isfinite(px) & (px > 0)).all(), col
        vol = frame["volume"].to_numpy(np.float64)
        assert (np.isfinite(vol) & (vol >= 0)).all()
    elif kind == "quotes":
        assert tuple(frame.columns) == QUOTE_COLUMNS
        ts = frame["ts_event"].to_numpy(np.int64)
        for col in ("bid_px", "ask_px"):
            px = frame[col].to_numpy(np.float64)
            assert (np.isnan(px) | (np.isfinite(px) & (px > 0))).all(), col
        for col in ("bid_sz", "ask_sz"):
            sz = frame[col].to_numpy(np.float64)
            assert (np.isnan(sz) | (np.isfinite(sz) & (sz >= 0))).all(), col
    else:
        expected = TICK_COLUMNS if kind == "ticks" else None
        if expected is not None:
            assert tuple(frame.columns) == expected
            px = frame["price"].to_numpy(np.float64)
            assert (np.isfinite(px) & (px > 0)).all()
            sz = frame["size"].to_numpy(np.float64)
            assert (np.isfinite(sz) & (sz >= 0)).all()
            assert frame["side"].isin(["buy", "sell", "unknown"]).all()
        else:
            book_px = [c for c in frame.columns if "_px_" in c]
            for col in book_px:
                px = frame[col].to_numpy(np.float64)
                assert (np.isnan(px) | (np.isfinite(px) & (px > 0))).all(), col
        ts = frame["ts_event"].to_numpy(np.int64)
        assert frame["seq"].dtype == np.int64
    assert ((ts >= MIN_TS_NS) & (ts <= hi)).all()
    if "ts_recv" in frame:
        recv = frame["ts_recv"].dropna().to_numpy(np.int64)
        assert ((recv >= MIN_TS_NS) & (recv <= hi)).all()


def _kind_of(key: str) -> str:
    return key.split("/", 1)[0]


@cache
def _instrument(symbol: str) -> Instrument:
    return get_instrument(symbol)


def _run_one(
    tally: Tally,
    fmt: str,
    symbol: str,
    path: Path,
    data: bytes,
    work: Path,
    expected_rows: list[tuple[Any, ...]] | None,
    xfail_if: Callable[[BaseException], str | None] | None = None,
) -> None:
    """Write ``data`` to ``path``, load it into a fresh store and check the outcome."""
    case = Path(tempfile.mkdtemp(dir=work))
    try:
        target = case / path.name
        target.write_bytes(data)
        store = LocalRawStore(case / "raw")
        before = store.manifest()
        try:
            report = load_file(store, fmt, target, _instrument(symbol))
        except EXPECTED_ERRORS as exc:
            message = str(exc)
            assert target.name in message, f"rejection does not name the file: {message!r}"
            assert store.manifest() == before, "a rejected input left objects in the store"
            assert verify_store(store, workers=1).ok
            tally.outcomes["rejected"] += 1
            tally.reasons[_reason(message, target.name)] += 1
            if expected_rows is not None and expected_rows:
                raise AssertionError(f"a clean reordering was rejected: {message}") from exc
            return
        except Exception as exc:
            reason = xfail_if(exc) if xfail_if is not None else None
            tally.outcomes["other"] += 1
            if reason is not None:
                pytest.xfail(reason)
            raise
        entries = store.manifest()
        assert verify_store(store, workers=1).ok
        assert sum(e.rows for e in entries) == report.rows
        assert sorted(e.key for e in entries) == sorted(report.written)
        loaded: list[tuple[Any, ...]] = []
        for entry in entries:
            frame = store.read_frame(entry.key)
            assert len(frame) == entry.rows
            _check_frame(_kind_of(entry.key), frame)
            if expected_rows is not None:
                loaded.extend(_row_values(fmt, rec) for rec in frame.to_dict("records"))
        tally.outcomes["loaded"] += 1
        if expected_rows is not None:
            assert sorted(loaded, key=repr) == sorted(expected_rows, key=repr)
            tally.outcomes["exact"] += 1
    finally:
        shutil.rmtree(case, ignore_errors=True)


def _corpus_settings() -> settings:
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def _report(tally: Tally) -> None:
    print(f"\n[corpus] {tally.line()}")
    assert tally.tried >= MIN_TRIED, tally.line()
    assert tally.outcomes["other"] == 0


# --------------------------------------------------------------------------------------------
# Text formats: generic CSV, Lean (trades, quotes, minute), Tardis (trades, quotes)
# --------------------------------------------------------------------------------------------

_ANY_TEXT_OPS = st.lists(
    st.one_of(*ROW_OPS, *TEXT_OPS, *BYTE_OPS),
    min_size=1,
    max_size=4,
)
TEXT_PLAN = st.tuples(
    # one plan in eight only reorders, duplicates, deletes rows: the content must load exactly
    st.integers(0, 7).flatmap(
        lambda k: (
            st.lists(st.one_of(*PRESERVING_OPS, TEXT_OPS[1]), min_size=1, max_size=3)
            if k == 7
            else _ANY_TEXT_OPS
        )
    ),
    st.booleans(),
    st.sampled_from(["plain"] * 12 + ["stored", "txt", "two", "contract"]),
)


@pytest.mark.parametrize(
    "fmt", ["csv", "lean-trades", "lean-quotes", "lean-minute", "tardis-trades", "tardis-quotes"]
)
def test_text_format_corpus(fmt: str, tmp_path: Path) -> None:
    seed = _seed(fmt)
    tally = Tally(fmt)
    base = [(i, r) for i, r in enumerate(seed.rows)]

    @_corpus_settings()
    @given(plan=TEXT_PLAN)
    def run(plan: tuple[list[tuple[Any, ...]], bool, str]) -> None:
        ops, outer, member = plan
        row_ops = [op for op in ops if op[0] in ROW_KINDS]
        text_ops = [op for op in ops if op[0] in ("encoding", "crlf")]
        byte_ops = [op for op in ops if op[0] in ("flip", "truncate", "insert", "cut")]
        if not seed.zipped:
            member = "plain"
        rows = _apply_row_ops(base, row_ops, seed.ts_cols, seed.far_ts)
        data = _serialize(seed, [r for _, r in rows], text_ops, byte_ops, outer, member)
        clean = all(op[0] in PRESERVING for op in ops) and member in ("plain", "stored")
        expected = [v for i, _ in rows if (v := seed.reference[i]) is not None] if clean else None
        _run_one(tally, fmt, seed.symbol, Path(seed.file_name), data, tmp_path, expected)

    run()
    _report(tally)


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------

HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            float("nan"),
            float("inf"),
            float("-inf"),
            -1.0,
            0.0,
            -0.0,
            1e308,
            2**63 - 1,
            -(2**63),
            True,
            "",
            "abc",
            "167.41",
            "x" * 100_000,
            "é€",
            b"\xff\xfe",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=6),
)
PARQUET_OPS = st.one_of(
    st.tuples(st.just("set"), IDX, IDX, HOSTILE_VALUES),
    st.tuples(st.just("set_ts"), IDX, IDX),
    st.tuples(
        st.just("astype"),
        IDX,
        st.sampled_from(["str", "float64", "int64", "bool", "category", "object", "float32"]),
    ),
    st.tuples(
        st.just("ts_repr"),
        st.sampled_from(["naive", "int_ns", "iso", "new_york", "ms_unit", "float_ns", "iso_naive"]),
    ),
    ANY_PRESERVING_OP,
    st.tuples(st.just("drop_col"), IDX),
    st.tuples(st.just("dup_name"), IDX),
    *BYTE_OPS,
)
FAR_TIMESTAMPS = [
    pd.Timestamp("2013-10-07T03:00:00Z"),
    pd.Timestamp("2013-10-12T12:00:00Z"),
    pd.Timestamp("1990-01-01T00:00:00Z"),
    pd.Timestamp("1970-01-01T00:00:00Z"),
    pd.Timestamp("1989-12-31T23:59:59Z"),
    pd.Timestamp("2200-01-01T00:00:00Z"),
    pd.Timestamp("1677-09-22T00:00:00Z"),
    pd.NaT,
]


@cache
def _parquet_seed() -> pd.DataFrame:
    header, rows = _generic_rows(_data_root())
    frame = pd.DataFrame(rows, columns=header)
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(frame["timestamp"], utc=True),
            "price": frame["price"].astype(float),
            "size": frame["size"].astype(float),
            "side": frame["side"],
            "ts_recv": pd.to_datetime(frame["ts_recv"], utc=True),
            "seq": frame["seq"].astype(np.int64),
            "exchange": frame["exchange"],
            "condition": frame["condition"],
        }
    )


@cache
def _parquet_reference() -> list[tuple[Any, ...]]:
    """Per seed row (= its ``seq``), the value tuple a clean load stores."""
    data = _to_parquet(_parquet_seed().copy(), None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus_trades.parquet"
        path.write_bytes(data)
        store = LocalRawStore(Path(tmp) / "raw")
        load_file(store, "parquet", path, get_instrument("SPY"))
        frame = pd.concat([store.read_frame(e.key) for e in store.manifest()], ignore_index=True)
    by_seq = {
        int(s): _row_values("parquet", r)
        for s, r in zip(frame["seq"], frame.to_dict("records"), strict=True)
    }
    return [by_seq[i] for i in range(len(_parquet_seed()))]


def _ts_repr(frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    ts = frame["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        return frame
    if variant == "naive":
        frame["timestamp"] = ts.dt.tz_localize(None)
    elif variant == "int_ns":
        frame["timestamp"] = ts.astype("int64")
    elif variant == "float_ns":
        frame["timestamp"] = ts.astype("int64").astype(float)
    elif variant == "iso":
        frame["timestamp"] = ts.map(lambda t: t.isoformat())
    elif variant == "iso_naive":
        frame["timestamp"] = ts.dt.tz_localize(None).map(lambda t: t.isoformat())
    elif variant == "new_york":
        frame["timestamp"] = ts.dt.tz_convert("America/New_York")
    elif variant == "ms_unit":
        frame["timestamp"] = ts.dt.as_unit("ms")
    return frame


def _mutate_frame(
    frame: pd.DataFrame, ops: list[tuple[Any, ...]]
) -> tuple[pd.DataFrame, list[int], list[str] | None]:
    """Apply the frame ops; returns the frame, the seed row of each of its rows and, for a
    duplicated column name, the column names."""
    names: list[str] | None = None
    dup_name: int | None = None
    ids = np.arange(len(frame))
    for op in ops:
        kind = op[0]
        n, width = len(frame), len(frame.columns)
        if kind in ("set", "set_ts", "delete", "duplicate", "swap") and n == 0:
            continue
        order: list[int] | None = None
        if kind == "set":
            col = frame.columns[op[2] % width]
            values = frame[col].astype(object)
            values.iloc[op[1] % n] = op[3]
            frame[col] = values
        elif kind == "set_ts" and "timestamp" in frame:
            values = frame["timestamp"].astype(object)
            values.iloc[op[1] % n] = FAR_TIMESTAMPS[op[2] % len(FAR_TIMESTAMPS)]
            try:
                frame["timestamp"] = pd.to_datetime(values, utc=True)
            except (ValueError, TypeError, OverflowError):
                frame["timestamp"] = values
        elif kind == "astype":
            col = frame.columns[op[1] % width]
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                frame[col] = frame[col].astype(op[2])
        elif kind == "ts_repr" and "timestamp" in frame:
            frame = _ts_repr(frame, op[1])
        elif kind == "delete":
            order = [i for i in range(n) if i != op[1] % n]
        elif kind == "duplicate":
            i = op[1] % n
            order = [*range(i + 1), *range(i, n)]
        elif kind == "swap":
            order = list(range(n))
            i, j = op[1] % n, op[2] % n
            order[i], order[j] = order[j], order[i]
        elif kind == "shuffle":
            order = list(range(n))
            random.Random(op[1]).shuffle(order)
        elif kind == "keep_first":
            order = list(range(min(n, op[1])))
        elif kind == "drop_col" and width > 1:
            frame = frame.drop(columns=[frame.columns[op[1] % width]])
        elif kind == "dup_name":
            dup_name = op[1]
        if order is not None:
            frame = frame.iloc[order].reset_index(drop=True)
            ids = ids[order]
    if dup_name is not None and len(frame.columns) > 1:
        width = len(frame.columns)
        names = [str(c) for c in frame.columns]
        names[(dup_name + 1) % width] = names[dup_name % width]
    return frame, ids.tolist(), names


def _to_parquet(frame: pd.DataFrame, names: list[str] | None) -> bytes:
    for col in frame.columns:
        try:
            pa.array(frame[col])
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            frame[col] = frame[col].map(repr)  # mixed objects pyarrow cannot type: as text
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if names is not None:
        table = table.rename_columns(names)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


_ANY_PARQUET_OPS = st.lists(PARQUET_OPS, min_size=1, max_size=4)
PARQUET_PLAN = st.integers(0, 7).flatmap(
    lambda k: (
        st.lists(st.one_of(*PRESERVING_OPS), min_size=1, max_size=3) if k == 7 else _ANY_PARQUET_OPS
    )
)


def test_parquet_corpus(tmp_path: Path) -> None:
    seed = _parquet_seed()
    reference = _parquet_reference()
    tally = Tally("parquet")

    @_corpus_settings()
    @given(ops=PARQUET_PLAN)
    def run(ops: list[tuple[Any, ...]]) -> None:
        frame = seed.copy()
        frame_ops = [op for op in ops if op[0] not in ("flip", "truncate", "insert", "cut")]
        byte_ops = [op for op in ops if op[0] in ("flip", "truncate", "insert", "cut")]
        frame, rows, names = _mutate_frame(frame, frame_ops)
        data = _apply_byte_ops(_to_parquet(frame, names), byte_ops)
        clean = all(op[0] in PRESERVING for op in ops)
        expected = [reference[i] for i in rows] if clean else None
        _run_one(tally, "parquet", "SPY", Path("corpus_trades.parquet"), data, tmp_path, expected)

    run()
    _report(tally)


# --------------------------------------------------------------------------------------------
# Databento MBO
# --------------------------------------------------------------------------------------------

MBO_SIZE = 56
# name -> (offset, struct width in bytes, signed)
MBO_FIELDS = {
    "length": (0, 1, False),
    "rtype": (1, 1, False),
    "instrument_id": (4, 4, False),
    "ts_event": (8, 8, False),
    "price": (24, 8, True),
    "size": (32, 4, False),
    "flags": (36, 1, False),
    "action": (38, 1, False),
    "side": (39, 1, False),
    "ts_recv": (40, 8, False),
    "sequence": (52, 4, False),
}
TS_2013 = 1_381_152_600_000_000_000
MBO_VALUES = {
    "length": [0, 1, 13, 15, 16, 255],
    "rtype": [0, 0x01, 0xA0, 0xA1, 0x13, 0xFF],
    "instrument_id": [0, 17078, 2**32 - 1],
    "ts_event": [0, 1, TS_2013, 2**62, 2**63, 2**64 - 1, 7_258_118_400_000_000_000],
    "price": [0, -1, 1, -(2**63), 2**63 - 1, 2**62, -4_799_000_000_000],
    "size": [0, 1, 2**32 - 1],
    "flags": [0, 0x80, 0x20, 0x08, 0xFF, 0xA8],
    "action": [ord(c) for c in "ACMTFRNX"] + [0],
    "side": [ord(c) for c in "ABNZ"] + [0],
    "ts_recv": [0, TS_2013, 2**63, 2**64 - 1, 7_258_118_400_000_000_000],
    "sequence": [0, 2**32 - 1],
}
DBN_OPS = st.one_of(
    st.tuples(st.just("field"), IDX, st.sampled_from(sorted(MBO_FIELDS)), IDX),
    st.tuples(st.just("delete"), IDX),
    st.tuples(st.just("duplicate"), IDX),
    st.tuples(st.just("swap"), IDX, IDX),
    st.tuples(st.just("keep_first"), st.integers(0, DBN_WINDOW[1] - DBN_WINDOW[0] + 2)),
    st.tuples(st.just("meta_flip"), IDX, st.integers(0, 7)),
    *BYTE_OPS,
)
DBN_PLAN = st.tuples(
    st.lists(DBN_OPS, min_size=1, max_size=4),
    st.sampled_from(["zst", "plain", "zst_then_bytes"]),
)


@cache
def _dbn_seed() -> tuple[bytes, list[bytes]]:
    root = _data_root()
    raw = _zstd_decompress((root / DBN_FILE).read_bytes(), Path(DBN_FILE))
    meta_end = 8 + int.from_bytes(raw[4:8], "little")
    first, last = DBN_WINDOW
    records = [
        raw[meta_end + i * MBO_SIZE : meta_end + (i + 1) * MBO_SIZE] for i in range(first, last)
    ]
    return raw[:meta_end], records


def _dbn_bytes(plan: tuple[list[tuple[Any, ...]], str]) -> bytes:
    ops, container = plan
    meta, base = _dbn_seed()
    meta_buf = bytearray(meta)
    records = [bytearray(r) for r in base]
    byte_ops = [op for op in ops if op[0] in ("flip", "truncate", "insert", "cut")]
    for op in ops:
        kind = op[0]
        n = len(records)
        if kind == "meta_flip":
            meta_buf[8 + op[1] % (len(meta_buf) - 8)] ^= 1 << op[2]
        elif kind == "keep_first":
            records = records[: op[1]]
        elif n == 0:
            continue
        elif kind == "field":
            offset, width, signed = MBO_FIELDS[op[2]]
            choices = MBO_VALUES[op[2]]
            value = choices[op[3] % len(choices)]
            rec = records[op[1] % n]
            rec[offset : offset + width] = value.to_bytes(width, "little", signed=signed)
        elif kind == "delete":
            del records[op[1] % n]
        elif kind == "duplicate":
            i = op[1] % n
            records.insert(i + 1, bytearray(records[i]))
        elif kind == "swap":
            i, j = op[1] % n, op[2] % n
            records[i], records[j] = records[j], records[i]
    stream = bytes(meta_buf) + b"".join(bytes(r) for r in records)
    if container == "plain":
        return _apply_byte_ops(stream, byte_ops)
    if container == "zst":
        return zstandard.ZstdCompressor().compress(_apply_byte_ops(stream, byte_ops))
    return _apply_byte_ops(zstandard.ZstdCompressor().compress(stream), byte_ops)


def test_databento_mbo_corpus(tmp_path: Path) -> None:
    _dbn_seed()
    tally = Tally("databento-mbo")

    @_corpus_settings()
    @given(plan=DBN_PLAN)
    def run(plan: tuple[list[tuple[Any, ...]], str]) -> None:
        name = "corpus.mbo.dbn" if plan[1] == "plain" else "corpus.mbo.dbn.zst"
        _run_one(tally, "databento-mbo", "ES", Path(name), _dbn_bytes(plan), tmp_path, None)

    run()
    _report(tally)


# --------------------------------------------------------------------------------------------
# Regression cases: one input per defect the corpora found in the readers
# --------------------------------------------------------------------------------------------


def _text_case(fmt: str, row: int, col: int, value: str) -> tuple[str, str, str, bytes]:
    seed = _seed(fmt)
    rows = [list(r) for r in seed.rows[:5]]
    rows[row][col] = value
    return fmt, seed.symbol, seed.file_name, _serialize(seed, rows, [], [], False)


def _parquet_case(frame_op: Callable[[pd.DataFrame], pd.DataFrame]) -> tuple[str, str, str, bytes]:
    frame = frame_op(_parquet_seed().head(5).copy())
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return "parquet", "SPY", "corpus_trades.parquet", buf.getvalue()


def _dbn_case(field_name: str, value: int, record: int = 60) -> tuple[str, str, str, bytes]:
    # record 60 of the window is the first trade (T) of the file
    plan = ([("field", record, field_name, MBO_VALUES[field_name].index(value))], "zst")
    return "databento-mbo", "ES", "corpus.mbo.dbn.zst", _dbn_bytes(plan)


def _corrupt_zip_entry() -> tuple[str, str, str, bytes]:
    seed = _seed("lean-trades")
    data = bytearray(_serialize(seed, seed.rows, [], [], False))
    data[60] ^= 0xFF  # inside the deflated entry: CRC or zlib error on read
    return "lean-trades", "SPY", seed.file_name, bytes(data)


REGRESSIONS: dict[str, Callable[[], tuple[str, str, str, bytes]]] = {
    # was OverflowError (not a ValueError): µs beyond int64
    "tardis-ts-overflow": lambda: _text_case("tardis-trades", 1, 2, str(2**63)),
    # was IntCastingNaNError without the file name
    "tardis-ts-empty": lambda: _text_case("tardis-trades", 1, 2, ""),
    # was accepted: Tardis quotes had no value checks at all
    "tardis-negative-bid": lambda: _text_case("tardis-quotes", 2, 6, "-9681.5"),
    "tardis-ts-1970": lambda: _text_case("tardis-quotes", 0, 2, "0"),
    # was UnicodeDecodeError without the file name
    "csv-latin-1": lambda: (
        "csv",
        "SPY",
        "corpus_trades.csv",
        _serialize(_seed("csv"), [[*_seed("csv").rows[0][:6], "é", ""]], [], [], False).replace(
            "é".encode(), b"\xe9"
        ),
    ),
    # was accepted: integer-ns timestamps were not range-checked
    "csv-ts-int-1970": lambda: (
        "csv",
        "SPY",
        "corpus_trades.csv",
        b"timestamp,price,size\n1000,167.41,100\n",
    ),
    # was pyarrow ArrowInvalid / OSError without the file name
    "parquet-corrupt": lambda: (
        "parquet",
        "SPY",
        "corpus_trades.parquet",
        _parquet_case(lambda f: f)[3][:-9],
    ),
    # was OutOfBoundsDatetime without the file name
    "parquet-us-far-future": lambda: _parquet_case(
        lambda f: f.assign(
            timestamp=pd.Series(
                [np.datetime64(2**62, "us")] * len(f), dtype="datetime64[us]"
            ).dt.tz_localize("UTC")
        )
    ),
    # was BadZipFile (CRC) / zlib.error escaping the reader
    "lean-corrupt-entry": _corrupt_zip_entry,
    # was pyo3 PanicException (a BaseException) from databento-dbn
    "dbn-record-length": lambda: _dbn_case("length", 13),
    # was OverflowError building the int64 column
    "dbn-ts-event-undefined": lambda: _dbn_case("ts_event", 2**64 - 1),
    # was accepted
    "dbn-trade-price-negative": lambda: _dbn_case("price", -1),
    "dbn-ts-event-1970": lambda: _dbn_case("ts_event", 1),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_known_bad_input_is_rejected_naming_the_file(case: str, tmp_path: Path) -> None:
    fmt, symbol, name, data = REGRESSIONS[case]()
    path = tmp_path / name
    path.write_bytes(data)
    store = LocalRawStore(tmp_path / "raw")
    with pytest.raises(ValueError, match=re.escape(name)):
        load_file(store, fmt, path, _instrument(symbol))
    assert store.manifest() == []
    assert verify_store(store, workers=1).ok


def test_parquet_categorical_text_and_csv_condition_digits_load_verbatim(tmp_path: Path) -> None:
    store = LocalRawStore(tmp_path / "raw")
    fmt, symbol, name, data = _parquet_case(
        lambda f: f.assign(exchange=f["exchange"].astype("category"), condition="0020")
    )
    (tmp_path / name).write_bytes(data)
    load_file(store, fmt, tmp_path / name, _instrument(symbol))  # was TypeError (categorical)
    csv = tmp_path / "conditions.csv"
    csv.write_text("timestamp,price,size,condition\n2013-10-07T14:00:00Z,167.41,100,0020\n")
    load_file(store, "csv", csv, _instrument("SPY"))  # was read as the number 20
    frames = [store.read_frame(e.key) for e in store.manifest()]
    assert [f["condition"].unique().tolist() for f in frames] == [["0020"], ["0020"]]
    assert set(frames[0]["exchange"]) <= {"P", "Q"}
