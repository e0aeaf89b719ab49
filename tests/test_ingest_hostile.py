"""Bad-input acceptance test of the live ingest service: hostile requests over real HTTP.

A real uvicorn server on a free loopback port (temporary ``FBE_HOME``, a 32 KiB body limit)
receives a hypothesis-generated corpus of at least 1,000 requests, each invalid by construction:
every strategy starts from a valid tick batch or alert (``test_base_requests_are_valid`` proves
the bases pass the service's own models and signature check) and adds at least one defect:

* ``/v1/ticks``: a wrong JSON type for each field, missing fields, NaN / Infinity / negative /
  zero prices, negative sizes, unknown symbols, timestamps without a zone, out of range or
  ``bool``, out-of-range ``seq``, over-long strings, extra fields (``extra="forbid"``),
  surrogates, one bad tick in an otherwise valid batch, empty bodies and lists, non-JSON, bad
  UTF-8, deeply nested JSON, bodies over the limit (with and without ``Content-Length``), and a
  missing, malformed, wrong or stale (outside +-300 s) ``FBE-Signature``;
* ``/webhook/tradingview``: a wrong, missing or mistyped passphrase, unsupported content types,
  invalid alerts (the same field defects, the passphrase spelled with JSON escapes, NDJSON),
  mixed batches, empty, non-JSON, bad UTF-8, deeply nested and oversized bodies;
* ``/v1/watermark``: the signature defects of ``/v1/ticks``, and bodies with a wrong type,
  unknown symbol, bad watermark, missing or extra field, or that are not a JSON object;
* hand-picked traps, all sent on every run: booleans as numbers, out-of-range ``seq``, non-ASCII
  digits in timestamps and in the signature's ``t``, ``t`` of 400 and 5,000 digits, passphrases
  with lone surrogates, the right passphrase inside NDJSON, escaped, case-changed, truncated,
  Latin-1, UTF-16 and too deeply nested bodies, raw U+2028 / U+0085 inside NDJSON strings.

What it proves, per request and over the whole corpus: no response >= 500 and no connection
error (one persistent httpx client); every response is the expected 4xx with a JSON ``detail``
string, and a 422 names the field (and the tick's index) in ``errors``; every refusal is
dead-lettered exactly once with the expected reason class (``invalid``, ``malformed``,
``unauthorized``, ``bad_signature``, ``stale_timestamp``, ``missing_signature``, ``too_large``,
``unsupported_media_type``); no passphrase, right or guessed, is stored in a dead letter; and
nothing lands: the ``landed`` table is empty and the landing files hold 0 lines.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sqlite3
import string
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fbe_pipeline.live.app import TICKS, WATERMARK, WEBHOOK, create_app, verify_signature
from fbe_pipeline.live.landing import read_landing_file
from fbe_pipeline.live.models import MIN_TS_NS, TickIn, TradingViewAlert, WatermarkIn
from fbe_pipeline.live.settings import IngestSettings
from fbe_pipeline.market.instruments import load_instruments

KEY = b"hostile-test-hmac-key"
PASSPHRASE = "tr0ub4dor & 3 horses: the hostile edition"
MAX_BODY = 32 * 1024
TOLERANCE_S = 300
EXAMPLES = 60  # per category; the final test asserts >= MIN_REQUESTS were sent in all
MIN_REQUESTS = 1000
NS = 1_000_000_000
DAY_NS = 86_400 * NS
NOW_NS = time.time_ns()
NOW_S = NOW_NS // NS
# The shipped instruments: the test's FBE_HOME registers none of its own.
KNOWN = frozenset(load_instruments(Path("/nonexistent/instruments.yaml")))
TICK_FIELDS = frozenset(TickIn.model_fields)
TICK_REQUIRED = ("symbol", "price", "size", "timestamp")
ALERT_REQUIRED = ("symbol", "price", "volume", "timestamp")
BOOL_WORDS = {"0", "1", "off", "on", "f", "t", "false", "true", "n", "y", "no", "yes"}

# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


class Raw:
    """A JSON literal written verbatim into a body (``NaN``, ``1e999``, ``"\\ud800"``...)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


def dumps(doc: Any, ascii_only: bool = True) -> str:
    """``json.dumps`` (NaN and Infinity as JS literals) with :class:`Raw` values/keys spliced in."""
    raws: list[str] = []

    def mark(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"\x01raw{len(raws) - 1}\x01"
        if isinstance(node, dict):
            return {mark(k): mark(v) for k, v in node.items()}
        if isinstance(node, list):
            return [mark(v) for v in node]
        return node

    text = json.dumps(mark(doc), ensure_ascii=ascii_only)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x01raw{i}\x01"), raw)
    return text


def mac(key: bytes, stamp: str, body: bytes) -> str:
    return hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Sig:
    """How a ``/v1/ticks`` request is signed, resolved when it is sent (the clock moves).

    ``kind``: ``valid``; ``none`` (no header); ``stale`` (a correct signature, ``t`` = now +
    ``offset`` or the digits ``t_text``); ``wrong_key``; ``other_body`` (over ``other``);
    ``other_t`` (signed at now, header says now + ``offset``); ``tampered`` (see ``tamper``);
    ``raw`` (the header ``template`` with ``{now}`` and ``{sig}`` filled in).
    """

    kind: str = "valid"
    offset: int = 0
    t_text: str = ""
    key: bytes = KEY
    other: bytes = b""
    tamper: str = ""
    template: bytes = b""
    name: str = "FBE-Signature"

    def headers(self, body: bytes) -> list[tuple[str, str | bytes]]:
        now = int(time.time())
        stamp = str(now)
        good = mac(KEY, stamp, body)
        if self.kind == "none":
            return []
        if self.kind == "valid":
            value = f"t={stamp},v1={good}"
        elif self.kind == "stale":
            t = self.t_text or str(now + self.offset)
            value = f"t={t},v1={mac(KEY, t, body)}"
        elif self.kind == "wrong_key":
            value = f"t={stamp},v1={mac(self.key, stamp, body)}"
        elif self.kind == "other_body":
            value = f"t={stamp},v1={mac(KEY, stamp, self.other)}"
        elif self.kind == "other_t":
            value = f"t={now + self.offset},v1={good}"
        elif self.kind == "tampered":
            value = f"t={stamp},v1={_tamper(good, self.tamper)}"
        elif self.kind == "raw":
            raw = self.template.replace(b"{now}", stamp.encode()).replace(b"{sig}", good.encode())
            return [(self.name, raw)]
        else:  # pragma: no cover - a typo in a strategy
            raise AssertionError(self.kind)
        return [(self.name, value)]


def _tamper(sig: str, how: str) -> str:
    if how == "flip":
        return sig[:-1] + ("0" if sig[-1] != "0" else "1")
    if how == "upper":
        return sig.upper() if sig.upper() != sig else _tamper(sig, "flip")
    if how == "truncate":
        return sig[:-2]
    if how == "prefix":
        return "sha256=" + sig
    if how == "others":
        return "0" * 64 + ",v1=" + "f" * 64 + ",v0=" + sig
    raise AssertionError(how)


@dataclass(frozen=True)
class Case:
    """One hostile request and what the service must answer.

    ``fields``: field names the 422's ``errors`` must name; ``index``: the bad tick's position;
    ``secrets``: strings that must never be stored in the dead letter.
    """

    category: str
    endpoint: str
    body: bytes
    status: int
    reason: str
    headers: tuple[tuple[str, str | bytes], ...] = ()
    sig: Sig | None = None
    chunked: bool = False
    fields: frozenset[str] = frozenset()
    index: int | None = None
    secrets: tuple[str, ...] = ()


def _invalid(category: str, endpoint: str, body: bytes, **kw: Any) -> Case:
    return Case(category, endpoint, body, 422, "invalid", **kw)


# --------------------------------------------------------------------------------------------
# Valid bases
# --------------------------------------------------------------------------------------------


def iso(ns: int, zone: str = "Z", sep: str = "T") -> str:
    """``ns`` (UTC) as ISO-8601 with 9 fractional digits, written in ``zone``'s local time."""
    sign = -1 if zone.startswith("-") else 1
    digits = zone.lstrip("+-").replace(":", "")
    offset = 0 if zone in ("Z", "z") else sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    seconds, frac = divmod(ns, NS)
    local = datetime.fromtimestamp(seconds + offset, UTC)
    return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + f".{frac:09d}" + zone


VALID_NS = st.integers(MIN_TS_NS + DAY_NS, NOW_NS - DAY_NS)
VALID_ISO = st.builds(
    iso,
    VALID_NS,
    st.sampled_from(["Z", "z", "+00:00", "+0000", "-05:00", "+05:30", "+14:00"]),
    st.sampled_from(["T", " "]),
)
WORD = st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=24)
PRICE_OK = st.floats(min_value=1e-6, max_value=1e9)
SIZE_OK = st.floats(min_value=0.0, max_value=1e9)

VALID_TICK = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(sorted(KNOWN)),
        "price": PRICE_OK,
        "size": SIZE_OK,
        "timestamp": st.one_of(VALID_NS, VALID_ISO),
    },
    optional={
        "side": st.sampled_from(["buy", "sell", "unknown"]),
        "trade_id": st.one_of(WORD, st.integers(0, 10**18)),
        "source": st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True),
        "seq": st.integers(0, 2**63 - 1),
        "exchange": st.text(max_size=32),
        "condition": st.text(max_size=32),
        "ohlc_eligible": st.booleans(),
        "volume_eligible": st.booleans(),
    },
)
VALID_ALERT = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(sorted(KNOWN)),
        "price": PRICE_OK,
        "volume": SIZE_OK,
        "timestamp": VALID_ISO,
        "passphrase": st.just(PASSPHRASE),
    },
    optional={
        "trade_id": st.one_of(WORD, st.integers(0, 10**18)),
        "seq": st.integers(0, 2**63 - 1),
        "ticker": WORD,  # extra fields are ignored on the webhook
        "comment": st.text(max_size=40),
    },
)
VALID_BATCH = st.lists(VALID_TICK, min_size=1, max_size=4)

# --------------------------------------------------------------------------------------------
# Defects: (field, value) pairs that make one tick or alert invalid
# --------------------------------------------------------------------------------------------

LETTERS = st.text(alphabet=string.ascii_letters, min_size=1, max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
CONTAINERS = st.one_of(
    st.lists(st.integers(), max_size=3), st.dictionaries(WORD, st.integers(), max_size=3)
)
NON_STR = st.one_of(st.none(), st.booleans(), st.integers(), FINITE, CONTAINERS)
NON_NUMBER = st.one_of(st.none(), st.booleans(), CONTAINERS, LETTERS)
NON_INTEGRAL = FINITE.filter(lambda x: x != int(x) if abs(x) < 2**53 else False)
NOT_BOOL_LIKE = st.one_of(
    st.none(),
    CONTAINERS,
    st.integers().filter(lambda n: n not in (0, 1)),
    NON_INTEGRAL,
    LETTERS.filter(lambda s: s.strip().lower() not in BOOL_WORDS),
)
SURROGATE = st.sampled_from(['"\\ud800"', '"x\\udfff"', '"\\udc00\\ud800"']).map(Raw)


def _wrong_types(endpoint: str) -> dict[str, st.SearchStrategy[Any]]:
    common: dict[str, st.SearchStrategy[Any]] = {
        "symbol": NON_STR,
        "price": NON_NUMBER,
        "trade_id": st.one_of(st.booleans(), FINITE, CONTAINERS),
        "seq": st.one_of(st.booleans(), NON_INTEGRAL, LETTERS, CONTAINERS),
    }
    if endpoint == WEBHOOK:
        # the webhook's timestamp is ISO-8601 text only
        return {
            **common,
            "volume": NON_NUMBER,
            "timestamp": st.one_of(NON_STR, VALID_NS, LETTERS),
        }
    return {
        **common,
        "size": NON_NUMBER,
        "timestamp": st.one_of(st.none(), st.booleans(), FINITE, CONTAINERS, LETTERS),
        "side": st.one_of(
            NON_STR,
            st.text(max_size=10).filter(lambda s: s.strip() not in ("buy", "sell", "unknown")),
        ),
        "source": NON_STR,
        "exchange": NON_STR,
        "condition": NON_STR,
        "ohlc_eligible": NOT_BOOL_LIKE,
        "volume_eligible": NOT_BOOL_LIKE,
    }


NAN_INF = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400"]).map(Raw),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e999"]),
)
NEGATIVE = st.one_of(
    st.floats(max_value=0.0, exclude_max=True, allow_infinity=False, allow_nan=False),
    st.integers(max_value=-1),
    st.integers(min_value=1, max_value=10**6).map(lambda n: f"-{n}.5"),
)
ZERO = st.one_of(
    st.sampled_from([0, 0.0, -0.0, "0", "0.0", "-0"]),
    st.sampled_from(["0e0", "-0", "0.000"]).map(Raw),
)
BAD_PRICE = st.one_of(NAN_INF, NEGATIVE, ZERO)
BAD_SIZE = st.one_of(NAN_INF, NEGATIVE)
BAD_SEQ = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63, max_value=10**40))
UNKNOWN_SYMBOL = st.one_of(
    st.text(max_size=40),
    st.sampled_from(sorted(KNOWN)).map(str.lower),
    st.sampled_from(sorted(KNOWN)).map(lambda s: s + "X"),
    st.sampled_from(["", " ", "*", "../../etc/passwd", "BTC-USDT", "BTCUSDT\x00"]),
    SURROGATE,
).filter(lambda s: isinstance(s, Raw) or s.strip() not in KNOWN)


def _zone_free_iso(ns: int) -> str:
    return iso(ns)[:-1]


def _bad_timestamps(endpoint: str) -> st.SearchStrategy[Any]:
    late_ns = st.integers(NOW_NS + 3 * DAY_NS, 10**30)
    early_ns = st.integers(-(10**30), MIN_TS_NS - 1)
    texts = st.one_of(
        VALID_NS.map(_zone_free_iso),  # no zone
        st.builds(
            lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}T00:00:00Z",
            st.integers(0, 1989),
            st.integers(1, 12),
            st.integers(1, 28),
        ),  # before 1990
        st.builds(
            lambda y: f"{y:04d}-01-01T00:00:00+00:00", st.integers(datetime.now(UTC).year + 2, 9999)
        ),  # in the future
        st.sampled_from(
            [
                "2020-02-30T00:00:00Z",
                "2020-13-01T00:00:00Z",
                "2020-02-22T24:00:00Z",
                "2020-02-22T23:60:00Z",
                "2020-02-22T12:00:00+24:00",
                "2020-02-22T12:00:00+99:99",
                "2020-02-22T12:00:00.1234567890Z",
                "2020-02-22",
                "12:00:00Z",
                "2020-02-22T12:00:00 UTC",
                "2020-02-22T12:00:00.\u0661\u0662\u0663Z",  # Arabic-Indic digits
                "\u0662\u0660\u0662\u0660-02-22T12:00:00Z",
                "now",
                "",
                "1582372800",  # seconds, as text
            ]
        ),
        st.booleans(),
    )
    if endpoint == WEBHOOK:
        return st.one_of(texts, st.integers(), FINITE)
    ints = st.one_of(
        late_ns,
        early_ns,
        st.integers(1_000_000_000, 2_000_000_000),  # seconds, not ns
        st.integers(1_000_000_000_000, 2_000_000_000_000),  # milliseconds
    )
    return st.one_of(texts, ints)


def _long_strings(endpoint: str) -> dict[str, st.SearchStrategy[Any]]:
    def long(minimum: int) -> st.SearchStrategy[str]:
        # non-space ends: the models strip whitespace before checking lengths
        return st.text(min_size=minimum - 1, max_size=2500).map(lambda s: f"<{s}>")

    out = {"symbol": long(33), "trade_id": long(129)}
    if endpoint == TICKS:
        out |= {
            "source": st.text(alphabet="abcXYZ019_.-", min_size=65, max_size=3000),
            "exchange": long(33),
            "condition": long(33),
        }
    return out


BAD_SOURCE = st.one_of(
    st.sampled_from(["", "   ", "a b", "bin/ance", "ünicode", "a\tb", "x;DROP TABLE"]),
    st.builds(
        lambda a, c, b: a + c + b,
        st.from_regex(r"[a-z]{1,5}", fullmatch=True),
        st.characters(exclude_characters=string.ascii_letters + string.digits + "_.-"),
        st.from_regex(r"[a-z]{1,5}", fullmatch=True),
    ),
)


@st.composite
def field_defect(draw: st.DrawFn, endpoint: str, kind: str | None = None) -> tuple[str, Any]:
    """One (field, value) that is invalid for ``endpoint``, of ``kind`` (any if None)."""
    kinds = ["wrong_type", "bad_number", "bad_symbol", "bad_timestamp", "bad_seq", "long"]
    if endpoint == TICKS:
        kinds.append("bad_source")
    kind = kind or draw(st.sampled_from(kinds))
    size = "size" if endpoint == TICKS else "volume"
    if kind == "wrong_type":
        options = _wrong_types(endpoint)
        name = draw(st.sampled_from(sorted(options)))
        return name, draw(options[name])
    if kind == "bad_number":
        name = draw(st.sampled_from(["price", size]))
        return name, draw(BAD_PRICE if name == "price" else BAD_SIZE)
    if kind == "bad_symbol":
        return "symbol", draw(UNKNOWN_SYMBOL)
    if kind == "bad_timestamp":
        return "timestamp", draw(_bad_timestamps(endpoint))
    if kind == "bad_seq":
        return "seq", draw(BAD_SEQ)
    if kind == "bad_source":
        return "source", draw(BAD_SOURCE)
    if kind == "long":
        options = _long_strings(endpoint)
        name = draw(st.sampled_from(sorted(options)))
        return name, draw(options[name])
    raise AssertionError(kind)


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


@st.composite
def tick_body(draw: st.DrawFn, ticks: list[dict[str, Any]]) -> tuple[bytes, list[tuple[str, str]]]:
    """A /v1/ticks body for ``ticks``: a JSON array, one object (one tick), or NDJSON."""
    shapes = ["array", "ndjson"] + (["object"] if len(ticks) == 1 else [])
    shape = draw(st.sampled_from(shapes))
    ascii_only = draw(st.booleans())
    if shape == "array":
        text = dumps(ticks, ascii_only)
    elif shape == "object":
        text = dumps(ticks[0], ascii_only)
    else:
        text = "\n".join(dumps(t, ascii_only) for t in ticks) + draw(st.sampled_from(["", "\n"]))
    media = (
        draw(st.sampled_from(["application/x-ndjson", "application/jsonl"]))
        if shape == "ndjson"
        else draw(st.sampled_from(["application/json", "text/plain", ""]))
    )
    return text.encode(), [("Content-Type", media)] if media else []


WEBHOOK_MEDIA = st.sampled_from(
    [
        "",
        "application/json",
        "text/plain",
        "text/plain; charset=utf-8",
        "Application/JSON; charset=UTF-8",
    ]
)


def _escape_all(text: str) -> str:
    return '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'


@st.composite
def alert_body(
    draw: st.DrawFn, alerts: list[dict[str, Any]]
) -> tuple[bytes, list[tuple[str, str]]]:
    """A webhook body: one object, a JSON list or (two or more alerts) NDJSON, with the
    passphrase key or value possibly spelled with JSON escapes."""
    shapes = ["list"] + (["object"] if len(alerts) == 1 else ["ndjson"])
    shape = draw(st.sampled_from(shapes))
    ascii_only = draw(st.booleans())
    if shape == "object":
        text = dumps(alerts[0], ascii_only)
    elif shape == "list":
        text = dumps(alerts, ascii_only)
    else:
        text = "\n".join(dumps(a, ascii_only) for a in alerts)
    if draw(st.booleans()):
        text = text.replace('"passphrase"', '"pass\\u0070hrase"')
    if draw(st.booleans()):
        text = text.replace(
            json.dumps(PASSPHRASE, ensure_ascii=ascii_only), _escape_all(PASSPHRASE)
        )
    media = draw(WEBHOOK_MEDIA)
    return text.encode(), [("Content-Type", media)] if media else []


def _fits(body: bytes) -> bytes:
    assume(len(body) <= MAX_BODY)
    return body


# --------------------------------------------------------------------------------------------
# Categories: /v1/ticks
# --------------------------------------------------------------------------------------------


@st.composite
def ticks_field_defect(draw: st.DrawFn, kind: str | None) -> Case:
    """One tick (or one of a batch) carries a bad field; the whole request must be refused."""
    batch = (
        draw(st.lists(VALID_TICK, min_size=2, max_size=6)) if kind is None else [draw(VALID_TICK)]
    )
    index = draw(st.integers(0, len(batch) - 1))
    name, value = draw(field_defect(TICKS, kind))
    batch[index] = {**batch[index], name: value}
    body, headers = draw(tick_body(batch))
    category = "ticks/mixed_batch" if kind is None else f"ticks/{kind}"
    return _invalid(
        category,
        TICKS,
        _fits(body),
        headers=tuple(headers),
        sig=Sig(),
        fields=frozenset([name]),
        index=index,
    )


@st.composite
def ticks_missing_fields(draw: st.DrawFn) -> Case:
    tick = draw(VALID_TICK)
    gone = draw(st.sets(st.sampled_from(TICK_REQUIRED), min_size=1))
    body, headers = draw(tick_body([{k: v for k, v in tick.items() if k not in gone}]))
    return _invalid(
        "ticks/missing_fields",
        TICKS,
        _fits(body),
        headers=tuple(headers),
        sig=Sig(),
        fields=frozenset(gone),
        index=0,
    )


EXTRA_KEY = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(TICK_REQUIRED).map(str.upper),
    st.sampled_from(TICK_REQUIRED).map(lambda k: " " + k),
    st.sampled_from(["__proto__", "constructor", "passphrase", "ts_recv", "key", "drift_ms"]),
    st.text(min_size=200, max_size=1500),
).filter(lambda k: k not in TICK_FIELDS)


@st.composite
def ticks_extra_field(draw: st.DrawFn) -> Case:
    tick: dict[Any, Any] = draw(VALID_TICK)
    key: str | Raw
    if draw(st.integers(0, 4)) == 0:
        # a key with a lone surrogate (JSON-escaped): not a valid str, so the tick is refused
        name, key = "body", Raw('"\\ud800key"')
        tick[key] = 1
    else:
        name = key = draw(EXTRA_KEY)
        tick[key] = draw(st.one_of(NON_STR, st.text(max_size=50)))
    body, headers = draw(tick_body([tick]))
    return _invalid(
        "ticks/extra_field",
        TICKS,
        _fits(body),
        headers=tuple(headers),
        sig=Sig(),
        fields=frozenset([name]),
        index=0,
    )


@st.composite
def ticks_empty(draw: st.DrawFn) -> Case:
    options: list[tuple[bytes, str, int, str]] = [
        (b"", "application/json", 400, "malformed"),
        (b"", "", 400, "malformed"),
        (b"   ", "application/json", 400, "malformed"),
        (b"\n\n", "text/plain", 400, "malformed"),
        (b"[]", "application/json", 422, "invalid"),
        (b" [ ] \n", "", 422, "invalid"),
        (b"", "application/x-ndjson", 422, "invalid"),
        (b"\n \n", "application/jsonl", 422, "invalid"),
    ]
    body, media, status, reason = draw(st.sampled_from(options))
    headers = (("Content-Type", media),) if media else ()
    return Case("ticks/empty", TICKS, body, status, reason, headers=headers, sig=Sig())


@st.composite
def ticks_not_objects(draw: st.DrawFn) -> Case:
    """JSON that is not a tick: scalars, nested lists, lists of scalars; 422 on ``body``."""
    item = draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            FINITE,
            st.text(max_size=20),
            st.lists(st.integers(), max_size=3),
        )
    )
    doc = draw(st.sampled_from(["bare", "listed"]))
    body = dumps(item if doc == "bare" and not isinstance(item, list) else [item]).encode()
    return _invalid(
        "ticks/not_objects", TICKS, body, sig=Sig(), fields=frozenset(["body"]), index=0
    )


NON_JSON_PREFIX = st.sampled_from(
    ["<", "<?xml version='1.0'?>", "'", "#", "@", "{'symbol': ", "[,", "undefined", "NaN-", "}"]
)


@st.composite
def non_json(draw: st.DrawFn, base: bytes) -> bytes:
    """Bytes that are not JSON (nor NDJSON): a bad first line, or ``base`` cut short."""
    how = draw(st.sampled_from(["prefix", "truncate", "form", "trailing_comma"]))
    if how == "prefix":
        return (draw(NON_JSON_PREFIX) + draw(st.text(max_size=200))).encode()
    if how == "truncate":
        return base[: draw(st.integers(1, len(base) - 1))]
    if how == "form":
        return b"symbol=BTCUSDT&price=9700&size=1&timestamp=2020-02-22T10%3A00%3A00Z"
    return base.rstrip(b"]}") + b",}"


@st.composite
def ticks_non_json(draw: st.DrawFn) -> Case:
    base = dumps(draw(VALID_BATCH)).encode()
    body = draw(non_json(base))
    media = draw(st.sampled_from(["application/json", "text/plain", ""]))
    headers = (("Content-Type", media),) if media else ()
    return Case("ticks/non_json", TICKS, _fits(body), 400, "malformed", headers, Sig())


BAD_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe",
        b"\x80",
        b"\xc0\xaf",
        b"\xc3(",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
    ]
)


@st.composite
def bad_utf8(draw: st.DrawFn, text: str) -> bytes:
    """``text`` made invalid UTF-8: a bad sequence inserted, or encoded as Latin-1 / UTF-16."""
    how = draw(st.sampled_from(["insert", "latin1", "utf16"]))
    if how == "latin1":
        return text.replace('"', '"\u00e9', 1).encode("latin-1", "replace")
    if how == "utf16":
        return text.encode("utf-16")  # with a BOM: 0xff 0xfe is never UTF-8
    data = text.encode()
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(BAD_UTF8) + data[at:]


@st.composite
def ticks_bad_utf8(draw: st.DrawFn) -> Case:
    body = draw(bad_utf8(dumps(draw(VALID_BATCH))))
    media = draw(st.sampled_from(["application/json", "application/x-ndjson", "text/plain"]))
    return Case(
        "ticks/bad_utf8", TICKS, _fits(body), 400, "malformed", (("Content-Type", media),), Sig()
    )


def _too_deep(draw: st.DrawFn) -> int:
    """A nesting depth beyond the recursion limit in force (hypothesis raises it while a test
    runs, and the limit is process-wide, so the server thread sees the same one)."""
    return sys.getrecursionlimit() + draw(st.integers(200, 1500))


def _nest(depth: int, how: str, leaf: str = "1") -> str:
    if how == "list":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


@st.composite
def ticks_deep_nesting(draw: st.DrawFn) -> Case:
    """Deep JSON (beyond Python's recursion limit) is malformed; shallow nesting is invalid."""
    deep = draw(st.booleans())
    how = draw(st.sampled_from(["list", "dict"]))
    depth = _too_deep(draw) if deep else draw(st.integers(2, 200))
    where = draw(st.sampled_from(["top", "field"]))
    if where == "top":
        body = _nest(depth, how)
        # a list of lists is not a tick; {"a": ...} lacks every field and has an extra one
        fields = frozenset(["body"] if how == "list" else [*TICK_REQUIRED, "a"])
    else:
        name = draw(st.sampled_from(["symbol", "price", "timestamp", "side", "trade_id"]))
        tick = {**draw(VALID_TICK), name: Raw(_nest(depth, how))}
        body = dumps(tick)
        fields = frozenset([name])
    if deep:
        return Case("ticks/deep_nesting", TICKS, _fits(body.encode()), 400, "malformed", sig=Sig())
    return _invalid("ticks/deep_nesting", TICKS, body.encode(), sig=Sig(), fields=fields, index=0)


@st.composite
def too_large(draw: st.DrawFn, endpoint: str) -> Case:
    """A body over the limit (valid but for its size), sent with Content-Length or chunked."""
    size = draw(st.integers(MAX_BODY + 1, 4 * MAX_BODY))
    sig, secrets = (None, (PASSPHRASE,)) if endpoint == WEBHOOK else (Sig(), ())
    if endpoint == WATERMARK:
        text = dumps(draw(VALID_WATERMARK))
    else:
        one = dumps(draw(VALID_ALERT if endpoint == WEBHOOK else VALID_TICK))
        text = "[" + ",".join([one] * ((size - 1) // (len(one) + 1))) + "]"
    body = text.encode().ljust(size, b" ")  # pad with JSON whitespace to exactly ``size``
    assert len(body) == size
    chunked = draw(st.booleans())
    return Case(
        endpoint.rsplit("/", 1)[1].replace("tradingview", "webhook") + "/too_large",
        endpoint,
        body,
        413,
        "too_large",
        (("Content-Type", "application/json"),),
        sig,
        chunked=chunked,
        secrets=secrets,
    )


# --------------------------------------------------------------------------------------------
# Categories: FBE-Signature
# --------------------------------------------------------------------------------------------


VALID_WATERMARK = st.fixed_dictionaries(
    {"symbol": st.sampled_from(sorted(KNOWN)), "watermark": st.one_of(VALID_NS, VALID_ISO)}
)


@st.composite
def signed_body(draw: st.DrawFn, endpoint: str) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A valid body for a signed endpoint: a tick batch or a watermark."""
    doc = draw(VALID_BATCH if endpoint == TICKS else VALID_WATERMARK)
    return dumps(doc).encode(), (("Content-Type", "application/json"),)


def _name(endpoint: str, what: str) -> str:
    return ("ticks/" if endpoint == TICKS else "watermark/") + what


@st.composite
def sig_missing(draw: st.DrawFn, endpoint: str) -> Case:
    body, headers = draw(signed_body(endpoint))
    sig = draw(
        st.one_of(
            st.just(Sig("none")),
            st.just(Sig("raw", template=b"")),
            st.sampled_from(
                ["X-FBE-Signature", "Signature", "FBE_Signature", "Stripe-Signature"]
            ).map(lambda name: Sig("valid", name=name)),
        )
    )
    return Case(
        _name(endpoint, "missing_signature"), endpoint, body, 401, "missing_signature", headers, sig
    )


MALFORMED_TEMPLATES = st.sampled_from(
    [
        b"v1={sig}",
        b"t={now}",
        b"t={now},v0={sig}",
        b"t={now};v1={sig}",
        b"T={now},V1={sig}",
        b"t = {now} , v1 = {sig}",
        b"t=,v1={sig}",
        b"t=abc,v1={sig}",
        b"t=-{now},v1={sig}",
        b"t=+{now},v1={sig}",
        b"t={now}.5,v1={sig}",
        b"t=0x{now},v1={sig}",
        b"t=1.7e9,v1={sig}",
        b"t=\xb2,v1={sig}",  # Latin-1 superscript two: str.isdigit() but not int()
        b"t=\xb9\xb2\xb3,v1={sig}",
        b"t=\xd9\xa3,v1={sig}",  # an Arabic-Indic digit's UTF-8, read as Latin-1
        b"{sig}",
        b"sha256={sig}",
        b"Bearer {sig}",
        b",,,,",
        b"t",
        b"=",
    ]
)


def _header_text(raw: bytes, allow: bytes = b"") -> bytes:
    """``raw`` reduced to visible Latin-1 header bytes, without ``=`` (unless allowed)."""
    kept = bytes(c for c in raw if (0x21 <= c <= 0x7E or c >= 0xA0) and (c != 0x3D or allow))
    return kept or b"x"


@st.composite
def sig_malformed(draw: st.DrawFn, endpoint: str) -> Case:
    body, headers = draw(signed_body(endpoint))
    garbage = st.binary(min_size=1, max_size=300).map(_header_text)
    template = draw(st.one_of(MALFORMED_TEMPLATES, garbage))
    sig = Sig("raw", template=template)
    return Case(
        _name(endpoint, "malformed_signature"), endpoint, body, 401, "bad_signature", headers, sig
    )


@st.composite
def sig_bad(draw: st.DrawFn, endpoint: str) -> Case:
    body, headers = draw(signed_body(endpoint))
    kind = draw(st.sampled_from(["wrong_key", "other_body", "other_t", "tampered"]))
    if kind == "wrong_key":
        sig = Sig(kind, key=draw(st.binary(max_size=40).filter(lambda k: k != KEY)))
    elif kind == "other_body":
        other = draw(st.sampled_from([body + b" ", body[:-1], b"", body.replace(b"1", b"2", 1)]))
        assume(other != body)
        sig = Sig(kind, other=other)
    elif kind == "other_t":
        sig = Sig(kind, offset=draw(st.integers(-250, 250).filter(bool)))
    else:
        tamper = draw(st.sampled_from(["flip", "upper", "truncate", "prefix", "others"]))
        sig = Sig(kind, tamper=tamper)
    return Case(
        _name(endpoint, "bad_signature"), endpoint, body, 401, "bad_signature", headers, sig
    )


@st.composite
def sig_stale(draw: st.DrawFn, endpoint: str) -> Case:
    """A correct signature whose ``t`` is outside +-300 s (or absurdly many digits)."""
    body, headers = draw(signed_body(endpoint))
    sig = draw(
        st.one_of(
            st.integers(TOLERANCE_S + 1, NOW_S).map(lambda k: Sig("stale", offset=-k)),
            st.integers(TOLERANCE_S + 10, 10**10).map(lambda k: Sig("stale", offset=k)),
            st.sampled_from(["0", "1", "000", "99999999999"]).map(lambda t: Sig("stale", t_text=t)),
            st.integers(13, 5000).map(lambda n: Sig("stale", t_text="9" * n)),
        )
    )
    return Case(
        _name(endpoint, "stale_timestamp"), endpoint, body, 401, "stale_timestamp", headers, sig
    )


# --------------------------------------------------------------------------------------------
# Categories: /webhook/tradingview
# --------------------------------------------------------------------------------------------

GUESS = st.text(alphabet="0123456789abcdef", min_size=8, max_size=16).map(lambda s: "guess-" + s)
NEAR_MISSES = [
    PASSPHRASE[:-1],
    PASSPHRASE + "!",
    PASSPHRASE.upper(),
    " " + PASSPHRASE,
    PASSPHRASE + " ",
    PASSPHRASE.replace(" ", "  ", 1),
]


@st.composite
def webhook_bad_passphrase(draw: st.DrawFn) -> Case:
    alerts = draw(st.lists(VALID_ALERT, min_size=1, max_size=3))
    kind = draw(
        st.sampled_from(
            ["missing", "guess", "near", "type", "surrogate", "one_of_many", "nested", "case"]
        )
    )
    secrets: list[str] = [PASSPHRASE]
    target = draw(st.integers(0, len(alerts) - 1))
    bad = dict(alerts[target])
    if kind == "missing":
        del bad["passphrase"]
    elif kind == "guess":
        secrets.append(guess := draw(GUESS))
        bad["passphrase"] = guess
    elif kind == "near":
        near = draw(st.sampled_from(NEAR_MISSES))
        secrets.append(near.strip())
        bad["passphrase"] = near
    elif kind == "type":
        bad["passphrase"] = draw(NON_STR)
    elif kind == "surrogate":
        bad["passphrase"] = Raw(draw(st.sampled_from(['"\\ud800"', '"\\udfff\\ud800"'])))
    elif kind == "one_of_many":
        alerts.append({k: v for k, v in bad.items() if k != "passphrase"})
    elif kind == "nested":
        del bad["passphrase"]
        bad["auth"] = {"passphrase": PASSPHRASE}
    else:
        bad["Passphrase"] = bad.pop("passphrase")
    alerts[target] = bad
    body, headers = draw(alert_body(alerts))
    return Case(
        "webhook/bad_passphrase",
        WEBHOOK,
        _fits(body),
        401,
        "unauthorized",
        tuple(headers),
        secrets=tuple(secrets),
    )


@st.composite
def webhook_scalars(draw: st.DrawFn) -> Case:
    """JSON that holds no alert object (so no passphrase): refused as unauthorized."""
    doc = draw(
        st.one_of(
            st.sampled_from(["[]", "{}", "null", "[[]]", '""', "[1, 2]", "true", "[null]"]),
            FINITE.map(json.dumps),
            st.text(max_size=30).map(json.dumps),
            st.lists(st.integers(), min_size=1, max_size=4).map(json.dumps),
        )
    )
    media = draw(WEBHOOK_MEDIA)
    headers = (("Content-Type", media),) if media else ()
    return Case("webhook/no_alert", WEBHOOK, doc.encode(), 401, "unauthorized", headers)


MEDIA_TOKEN = st.from_regex(r"[a-z][a-z0-9.+-]{0,15}/[a-z0-9.+*-]{1,20}", fullmatch=True)


@st.composite
def webhook_content_type(draw: st.DrawFn) -> Case:
    """A valid alert (right passphrase) under a content type the webhook does not take."""
    alerts = draw(st.lists(VALID_ALERT, min_size=1, max_size=2))
    body, _ = draw(alert_body(alerts))
    media: str | bytes = draw(
        st.one_of(
            st.sampled_from(
                [
                    "application/xml",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=xyz",
                    "text/html; charset=utf-8",
                    "application/x-ndjson",
                    "application/jsonl",
                    "application/json-patch+json",
                    "text/json",
                    "application/octet-stream",
                    "image/png",
                    "*/*",
                    "json",
                    "text",
                    "application/json5",
                    "text/plain2",
                    ";charset=utf-8",
                ]
            ),
            MEDIA_TOKEN,
            st.binary(min_size=1, max_size=40).map(lambda b: _header_text(b, allow=b"=")),
        )
    )
    text = media.decode("latin-1") if isinstance(media, bytes) else media
    assume(text.split(";")[0].strip().lower() not in ("application/json", "text/plain"))
    assume(text.split(";")[0].strip())
    return Case(
        "webhook/wrong_content_type",
        WEBHOOK,
        _fits(body),
        415,
        "unsupported_media_type",
        (("Content-Type", media),),
        secrets=(PASSPHRASE,),
    )


@st.composite
def webhook_field_defect(draw: st.DrawFn, batch: bool) -> Case:
    alerts = draw(st.lists(VALID_ALERT, min_size=2 if batch else 1, max_size=4 if batch else 1))
    index = draw(st.integers(0, len(alerts) - 1))
    name, value = draw(field_defect(WEBHOOK))
    alerts[index] = {**alerts[index], name: value}
    body, headers = draw(alert_body(alerts))
    return _invalid(
        "webhook/mixed_batch" if batch else "webhook/invalid_alert",
        WEBHOOK,
        _fits(body),
        headers=tuple(headers),
        fields=frozenset([name]),
        index=index,
        secrets=(PASSPHRASE,),
    )


@st.composite
def webhook_missing_fields(draw: st.DrawFn) -> Case:
    alert = draw(VALID_ALERT)
    gone = draw(st.sets(st.sampled_from(ALERT_REQUIRED), min_size=1))
    body, headers = draw(alert_body([{k: v for k, v in alert.items() if k not in gone}]))
    return _invalid(
        "webhook/missing_fields",
        WEBHOOK,
        _fits(body),
        headers=tuple(headers),
        fields=frozenset(gone),
        index=0,
        secrets=(PASSPHRASE,),
    )


@st.composite
def webhook_malformed(draw: st.DrawFn) -> Case:
    """Empty, non-JSON, bad UTF-8 or too deeply nested; the right passphrase may be inside."""
    alerts = draw(st.lists(VALID_ALERT, min_size=1, max_size=2))
    text = dumps(alerts if len(alerts) > 1 else alerts[0])
    kind = draw(st.sampled_from(["empty", "non_json", "bad_utf8", "deep"]))
    if kind == "empty":
        body = draw(st.sampled_from([b"", b" ", b"\n", b"\r\n\t "]))
    elif kind == "non_json":
        body = draw(non_json(text.encode()))
    elif kind == "bad_utf8":
        body = draw(bad_utf8(text))
    else:
        depth = _too_deep(draw)
        how = draw(st.sampled_from(["list", "dict"]))
        if draw(st.booleans()):
            body = _nest(depth, how).encode()
        else:  # a full alert, one field nested far too deep
            name = draw(st.sampled_from(["symbol", "price", "comment"]))
            body = dumps({**alerts[0], name: Raw(_nest(depth, how))}).encode()
    media = draw(WEBHOOK_MEDIA)
    headers = (("Content-Type", media),) if media else ()
    return Case(
        f"webhook/{kind}", WEBHOOK, _fits(body), 400, "malformed", headers, secrets=(PASSPHRASE,)
    )


@st.composite
def webhook_shallow_nesting(draw: st.DrawFn) -> Case:
    alert = draw(VALID_ALERT)
    name = draw(st.sampled_from(["symbol", "price", "volume", "timestamp"]))
    depth = draw(st.integers(2, 200))
    body = dumps({**alert, name: Raw(_nest(depth, draw(st.sampled_from(["list", "dict"]))))})
    return _invalid(
        "webhook/shallow_nesting",
        WEBHOOK,
        body.encode(),
        fields=frozenset([name]),
        index=0,
        secrets=(PASSPHRASE,),
    )


# --------------------------------------------------------------------------------------------
# Categories: /v1/watermark (signed like /v1/ticks; every body problem is a 422 ``invalid``)
# --------------------------------------------------------------------------------------------

WATERMARK_FIELDS = frozenset(["symbol", "watermark"])


@st.composite
def watermark_invalid(draw: st.DrawFn) -> Case:
    mark = draw(VALID_WATERMARK)
    text = dumps(mark)
    kind = draw(
        st.sampled_from(
            [
                *("wrong_type", "bad_symbol", "bad_watermark", "missing", "extra"),
                *("not_object", "non_json", "empty", "bad_utf8", "deep"),
            ]
        )
    )
    fields = frozenset(["body"])
    if kind == "wrong_type":
        name = draw(st.sampled_from(sorted(WATERMARK_FIELDS)))
        value = draw(
            NON_STR
            if name == "symbol"
            else st.one_of(st.none(), st.booleans(), FINITE, CONTAINERS, LETTERS)
        )
        body, fields = dumps({**mark, name: value}).encode(), frozenset([name])
    elif kind in ("bad_symbol", "bad_watermark"):
        name = "symbol" if kind == "bad_symbol" else "watermark"
        value = draw(
            UNKNOWN_SYMBOL.filter(lambda v: not isinstance(v, Raw))
            if name == "symbol"
            else _bad_timestamps(TICKS)
        )
        body, fields = dumps({**mark, name: value}).encode(), frozenset([name])
    elif kind == "missing":
        gone = draw(st.sets(st.sampled_from(sorted(WATERMARK_FIELDS)), min_size=1))
        body = dumps({k: v for k, v in mark.items() if k not in gone}).encode()
        fields = frozenset(gone)
    elif kind == "extra":
        key = draw(EXTRA_KEY.filter(lambda k: k not in WATERMARK_FIELDS))
        body, fields = dumps({**mark, key: draw(NON_STR)}).encode(), frozenset([key])
    elif kind == "not_object":
        body = draw(
            st.sampled_from([b"[]", b"null", b"1", b'"x"', b"true"]) | st.just(f"[{text}]".encode())
        )
    elif kind == "non_json":
        body = draw(non_json(text.encode()))
    elif kind == "empty":
        body = draw(st.sampled_from([b"", b" ", b"\n"]))
    elif kind == "bad_utf8":
        body = draw(bad_utf8(text))
    else:
        body = _nest(_too_deep(draw), draw(st.sampled_from(["list", "dict"]))).encode()
    return _invalid(
        "watermark/invalid",
        WATERMARK,
        _fits(body),
        headers=(("Content-Type", "application/json"),),
        sig=Sig(),
        fields=fields,
    )


# --------------------------------------------------------------------------------------------
# Traps: hand-picked values, every one sent on each run (not drawn: a draw may miss one)
# --------------------------------------------------------------------------------------------

BASE_TICK = {"symbol": "BTCUSDT", "price": 9700.5, "size": 1.0, "timestamp": "2020-02-22T10:00:00Z"}
BASE_ALERT = {
    "symbol": "BTCUSDT",
    "price": 9700.5,
    "volume": 0.5,
    "timestamp": "2020-02-22T10:00:00.123Z",
    "passphrase": PASSPHRASE,
}


def _each(name: str, *values: Any, raw: bool = False) -> list[tuple[str, Any]]:
    return [(name, Raw(v) if raw else v) for v in values]


COMMON_TRAPS: list[tuple[str, Any]] = [
    *_each("price", True, False, 0, -0.0, -1, None, [], {}, "NaN", "Infinity"),
    *_each("price", "NaN", "Infinity", "-Infinity", "1e999", "9" * 400, raw=True),
    ("price", "9" * 400),
    *_each("seq", True, False, -1, 2**63, 10**30, 1.5, "x"),
    *_each("symbol", "btcusdt", "", "   ", 5, None, "BTCUSDT\x00", "BTC USDT"),
    ("symbol", Raw('"\\ud800"')),
    *_each("timestamp", True, False, None, 1.5e18, "2020-02-22T10:00:00"),
    ("timestamp", "2020-02-22T10:00:00.\u0661\u0662\u0663Z"),  # Arabic-Indic digits
    ("timestamp", "\u0662\u0660\u0662\u0660-02-22T10:00:00Z"),
    ("timestamp", "2020-02-22T10:00:00.\uff11Z"),  # a full-width digit
    *_each("timestamp", "2020-02-30T00:00:00Z", "1989-12-31T23:59:59Z"),
    *_each("timestamp", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"),
    *_each("trade_id", "", "   ", True, 1.5, [], "x" * 129, 10**200),
]
TICK_TRAPS: list[tuple[str, Any]] = [
    *COMMON_TRAPS,
    *_each("size", True, False, -1, -1e-300, "-0.5", Raw("NaN"), Raw("-1e999")),
    *_each("timestamp", 0, -1, 10**19, 1582365600, 1582365600000, Raw("9" * 4000)),
    *_each("side", "BUY", "", None, 1, "bid"),
    *_each("source", "", "a b", "x" * 65, None, "tab\there"),
    *_each("exchange", "x" * 33, 5),
    ("condition", None),
    *_each("ohlc_eligible", None, 2, "maybe", [], 0.5),
    ("volume_eligible", {}),
]
ALERT_TRAPS: list[tuple[str, Any]] = [
    *COMMON_TRAPS,
    *_each("volume", True, -1, "-0.5", Raw("NaN"), Raw("Infinity")),
    *_each("timestamp", 1582365600, 1582365600000000000),  # the webhook wants text
]
PASSPHRASE_TRAPS: list[Any] = [
    Raw('"\\ud800"'),
    Raw('"' + PASSPHRASE + '\\udc00"'),
    "",
    None,
    True,
    0,
    [PASSPHRASE],
    {"value": PASSPHRASE},
    PASSPHRASE + "\x00",
    PASSPHRASE.upper(),
]


# Beyond the recursion limit (the traps are not sent under hypothesis, which raises it).
TOO_DEEP = sys.getrecursionlimit() + 2000


def _trap_cases() -> list[Case]:
    cases: list[Case] = []
    for name, value in TICK_TRAPS:
        body = dumps([{**BASE_TICK, name: value}]).encode()
        cases.append(
            _invalid("ticks/traps", TICKS, body, sig=Sig(), fields=frozenset([name]), index=0)
        )
    for key in (Raw('"\\ud800"'), "Symbol", "__proto__", "", "symbol "):
        body = dumps([{**BASE_TICK, key: 1}]).encode()
        # A lone surrogate is no valid str: pydantic refuses the whole tick; an empty name is
        # reported as "body".
        field_ = "body" if isinstance(key, Raw) or not key else key
        cases.append(
            _invalid("ticks/traps", TICKS, body, sig=Sig(), fields=frozenset([field_]), index=0)
        )
    for name, value in ALERT_TRAPS:
        body = dumps({**BASE_ALERT, name: value}).encode()
        fields = frozenset([name])
        cases.append(
            _invalid("webhook/traps", WEBHOOK, body, fields=fields, index=0, secrets=(PASSPHRASE,))
        )
    for value in PASSPHRASE_TRAPS:
        body = dumps({**BASE_ALERT, "passphrase": value}).encode()
        cases.append(
            Case("webhook/traps", WEBHOOK, body, 401, "unauthorized", secrets=(PASSPHRASE,))
        )
    # The right passphrase in refused bodies of every kind: it must never be stored.
    alert = dumps(BASE_ALERT)
    bad = dumps({**BASE_ALERT, "price": -1})
    escaped = _escape_all(PASSPHRASE)
    secret_bodies: list[tuple[bytes, int, str]] = [
        ((alert + "\n" + bad).encode(), 422, "invalid"),  # NDJSON
        (bad.replace('"passphrase"', '"pass\\u0070hrase"').encode(), 422, "invalid"),
        (bad.replace(json.dumps(PASSPHRASE), escaped).encode(), 422, "invalid"),
        (bad.replace('"passphrase"', '"Passphrase"').encode(), 401, "unauthorized"),
        (
            bad.replace('"passphrase"', '"Passphrase"')
            .replace(json.dumps(PASSPHRASE), escaped)
            .encode(),
            401,
            "unauthorized",
        ),
        (alert[:-1].encode(), 400, "malformed"),  # cut short
        (alert[: alert.index(PASSPHRASE) + 5].encode(), 400, "malformed"),
        (alert.replace("BTCUSDT", "BTC\u00e9USDT").encode("latin-1"), 400, "malformed"),
        (alert.encode("utf-16"), 400, "malformed"),
        (alert.encode("utf-8") + b"\xff", 400, "malformed"),
        (_nest(TOO_DEEP, "list", alert).encode(), 400, "malformed"),
        (
            alert.replace('"price": 9700.5', '"price": ' + _nest(TOO_DEEP, "list")).encode(),
            400,
            "malformed",
        ),
        (("[" + alert + ",]").encode(), 400, "malformed"),
        (("[" + "9" * 5000 + "]").encode(), 400, "malformed"),  # an int over 4300 digits
    ]
    for body, status, reason in secret_bodies:
        cases.append(
            Case(
                "webhook/traps",
                WEBHOOK,
                body,
                status,
                reason,
                (("Content-Type", "text/plain"),),
                secrets=(PASSPHRASE,),
            )
        )
    for endpoint in (TICKS, WATERMARK):
        good = (
            dumps([BASE_TICK])
            if endpoint == TICKS
            else dumps({"symbol": "ES", "watermark": 10**18})
        ).encode()
        where = _name(endpoint, "traps")
        for template in (
            b"t=\xb2,v1={sig}",
            b"t=\xb9\xb2\xb3,v1={sig}",
            b"t=,v1={sig}",
            b"t={now}",
        ):
            sig = Sig("raw", template=template)
            cases.append(Case(where, endpoint, good, 401, "bad_signature", sig=sig))
        for digits in ("0", "9" * 13, "9" * 400, "9" * 5000):
            sig = Sig("stale", t_text=digits)
            cases.append(Case(where, endpoint, good, 401, "stale_timestamp", sig=sig))
        cases.append(Case(where, endpoint, good, 401, "missing_signature", sig=Sig("none")))
        cases.append(
            Case(where, endpoint, good, 401, "bad_signature", sig=Sig("wrong_key", key=b""))
        )
        if endpoint == TICKS:
            ndjson = (("Content-Type", "application/x-ndjson"),)
            # NDJSON lines end at "\n" only: U+2028 and U+0085 may stand raw in JSON strings,
            # so the bad tick (index 1, price) must be the one reported.
            for raw in ("\u2028", "\x85"):
                lines = [{**BASE_TICK, "exchange": f"x{raw}y"}, {**BASE_TICK, "price": -1}]
                body = "\n".join(dumps(t, ascii_only=False) for t in lines).encode()
                cases.append(
                    _invalid(
                        where,
                        endpoint,
                        body,
                        headers=ndjson,
                        sig=Sig(),
                        fields=frozenset(["price"]),
                        index=1,
                    )
                )
            for body, status, reason in [
                (b'{"a": 1}\n{', 400, "malformed"),
                (b"\n\n\n", 422, "invalid"),  # no ticks
                (b"[]\n[]", 422, "invalid"),
            ]:
                cases.append(Case(where, endpoint, body, status, reason, ndjson, Sig()))
    return cases


TRAPS = _trap_cases()


CATEGORIES: dict[str, st.SearchStrategy[Case]] = {
    "ticks/wrong_type": ticks_field_defect("wrong_type"),
    "ticks/bad_number": ticks_field_defect("bad_number"),
    "ticks/bad_symbol": ticks_field_defect("bad_symbol"),
    "ticks/bad_timestamp": ticks_field_defect("bad_timestamp"),
    "ticks/bad_seq": ticks_field_defect("bad_seq"),
    "ticks/bad_source": ticks_field_defect("bad_source"),
    "ticks/long": ticks_field_defect("long"),
    "ticks/mixed_batch": ticks_field_defect(None),
    "ticks/missing_fields": ticks_missing_fields(),
    "ticks/extra_field": ticks_extra_field(),
    "ticks/empty": ticks_empty(),
    "ticks/not_objects": ticks_not_objects(),
    "ticks/non_json": ticks_non_json(),
    "ticks/bad_utf8": ticks_bad_utf8(),
    "ticks/deep_nesting": ticks_deep_nesting(),
    "ticks/too_large": too_large(TICKS),
    "ticks/missing_signature": sig_missing(TICKS),
    "ticks/malformed_signature": sig_malformed(TICKS),
    "ticks/bad_signature": sig_bad(TICKS),
    "ticks/stale_timestamp": sig_stale(TICKS),
    "webhook/bad_passphrase": webhook_bad_passphrase(),
    "webhook/no_alert": webhook_scalars(),
    "webhook/wrong_content_type": webhook_content_type(),
    "webhook/invalid_alert": webhook_field_defect(batch=False),
    "webhook/mixed_batch": webhook_field_defect(batch=True),
    "webhook/missing_fields": webhook_missing_fields(),
    "webhook/malformed": webhook_malformed(),
    "webhook/shallow_nesting": webhook_shallow_nesting(),
    "webhook/too_large": too_large(WEBHOOK),
    "watermark/missing_signature": sig_missing(WATERMARK),
    "watermark/malformed_signature": sig_malformed(WATERMARK),
    "watermark/bad_signature": sig_bad(WATERMARK),
    "watermark/stale_timestamp": sig_stale(WATERMARK),
    "watermark/invalid": watermark_invalid(),
    "watermark/too_large": too_large(WATERMARK),
}

# --------------------------------------------------------------------------------------------
# The server and the checks
# --------------------------------------------------------------------------------------------


@dataclass
class Service:
    """The running service, one HTTP connection to it, and everything sent so far."""

    home: Path
    client: httpx.Client
    db: sqlite3.Connection
    sent: list[Case] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    last_letter: int = 0

    def dead_letters(self, after: int = 0) -> list[tuple[int, str, str, str, bytes]]:
        return self.db.execute(
            "SELECT id, endpoint, reason, detail, body FROM dead_letters WHERE id > ? ORDER BY id",
            (after,),
        ).fetchall()

    def landed(self) -> tuple[int, int]:
        """Ticks in the landing files (``read_landing_file``) and their raw line count."""
        files = list((self.home / "landing").rglob("*.jsonl"))
        ticks = sum(len(read_landing_file(p)) for p in files)
        return ticks, sum(len(p.read_bytes().splitlines()) for p in files)

    def send(self, case: Case) -> None:
        """Send ``case`` and check the answer, the new dead letter and the landing store."""
        headers = list(case.headers) + (case.sig.headers(case.body) if case.sig else [])
        content: bytes | Iterator[bytes] = case.body
        if case.chunked:  # no Content-Length: the limit is enforced while streaming
            content = iter([case.body[i : i + 4096] for i in range(0, len(case.body), 4096)])
        stored = self.stored()
        self.sent.append(case)  # counted even if the call or a check fails
        raw = [(k.encode(), v if isinstance(v, bytes) else v.encode("latin-1")) for k, v in headers]
        response = self.client.post(case.endpoint, content=content, headers=raw)
        self.statuses[response.status_code] += 1
        letters = self.dead_letters(self.last_letter)
        if letters:
            self.last_letter = letters[-1][0]

        status = response.status_code
        assert status < 500, f"{status}: {response.text[:500]}"
        assert 400 <= status < 500, f"hostile request accepted: {status} {response.text[:500]}"
        reply = response.json()
        assert isinstance(reply.get("detail"), str) and reply["detail"], reply
        assert status == case.status, reply
        if case.status == 422 and case.fields:
            assert reply.get("errors"), reply
            named = [(e.get("index"), str(e["field"])) for e in reply["errors"]]
            for name in case.fields:
                assert any(
                    i == case.index and (f == name or f.startswith(name + ".")) for i, f in named
                ), (name, case.index, reply)
        assert len(letters) == 1, f"{len(letters)} dead letters for one refusal"
        _, endpoint, reason, detail, body = letters[0]
        assert (endpoint, reason) == (case.endpoint, case.reason), detail
        assert detail == reply["detail"]
        leaked = _leaked(bytes(body), case.secrets)
        assert not leaked, f"secret stored in a dead letter: {leaked!r} in {bytes(body)[:300]!r}"
        assert self.stored() == stored, "a hostile request stored ticks"

    def stored(self) -> int:
        """Rows of the ``landed`` table (one per tick ever stored)."""
        return int(self.db.execute("SELECT count(*) FROM landed").fetchone()[0])


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _leaked(stored: bytes, secrets: tuple[str, ...]) -> list[str]:
    """The secrets in a stored body: as UTF-8, UTF-16, JSON-escaped, or in its (ND)JSON text."""
    texts: list[str] = []
    for doc in [stored, *stored.splitlines()]:
        try:
            texts.extend(_strings(json.loads(doc)))
        except (ValueError, RecursionError):
            continue
    found = []
    for secret in secrets:
        spellings = [
            secret.encode(),
            secret.encode("utf-16-le"),
            secret.encode("utf-16-be"),
            json.dumps(secret)[1:-1].encode(),
            _escape_all(secret)[1:-1].encode(),
        ]
        if any(s in stored for s in spellings) or any(secret in t for t in texts):
            found.append(secret)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("fbe_home_hostile")
    ingest = IngestSettings(
        home=home,
        webhook_passphrase=PASSPHRASE,
        hmac_key=KEY,
        max_body_bytes=MAX_BODY,
        tolerance_s=TOLERANCE_S,
    )
    app = create_app(ingest)
    assert frozenset(app.state.landing.instruments) == KNOWN
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    db = sqlite3.connect(ingest.idempotency_db)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield Service(home, client, db)
    finally:
        db.close()
        server.should_exit = True
        thread.join(10)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def _corpus_settings() -> settings:
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
        report_multiple_bugs=False,
    )


@_corpus_settings()
@given(batch=VALID_BATCH, alerts=st.lists(VALID_ALERT, min_size=1, max_size=3), data=st.data())
def test_base_requests_are_valid(
    batch: list[dict[str, Any]], alerts: list[dict[str, Any]], data: st.DataObject
) -> None:
    """The bases the defects are applied to pass the service's own checks (models with the
    symbols in context, the signature), so every refusal of the corpus is due to its defect."""
    context = {"symbols": KNOWN}
    body, _ = data.draw(tick_body(batch))
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    ticks = lines[0] if len(lines) == 1 and isinstance(lines[0], list) else lines
    assert len(ticks) == len(batch)
    for tick in ticks:
        TickIn.model_validate(tick, context=context)
    webhook_body, _ = data.draw(alert_body(alerts))
    try:
        doc = json.loads(webhook_body)
        items = doc if isinstance(doc, list) else [doc]
    except ValueError:  # NDJSON
        items = [json.loads(line) for line in webhook_body.splitlines()]
    assert len(items) == len(alerts)
    for item in items:
        assert item["passphrase"] == PASSPHRASE
        TradingViewAlert.model_validate(item, context=context)
    for endpoint in (TICKS, WATERMARK):
        signed, _ = data.draw(signed_body(endpoint))
        if endpoint == WATERMARK:
            WatermarkIn.model_validate_json(signed, context=context)
        header = dict(Sig().headers(signed))["FBE-Signature"]
        verify_signature(str(header), signed, KEY, TOLERANCE_S, time.time())


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_hostile_requests_are_refused_and_dead_lettered(service: Service, category: str) -> None:
    """Each hostile request gets its 4xx and reason, one dead letter, and lands nothing."""

    @_corpus_settings()
    @given(case=CATEGORIES[category])
    def run(case: Case) -> None:
        service.send(case)

    run()


def test_hand_picked_traps_are_refused_and_dead_lettered(service: Service) -> None:
    """Every trap (known-nasty values, secrets in refused bodies, signature edge cases) gets its
    4xx and reason, one dead letter, and lands nothing."""
    failures = []
    for case in TRAPS:
        try:
            service.send(case)
        except (AssertionError, httpx.HTTPError) as exc:
            failures.append(f"{case!r}\n    {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} of {len(TRAPS)} traps:\n" + "\n".join(failures)


def test_corpus_totals(service: Service) -> None:
    """Over the whole corpus: >= 1,000 requests, all 4xx, each dead-lettered once with its
    reason, no secret stored, nothing landed."""
    sent = service.sent
    per_category = Counter(c.category for c in sent)
    print(f"\n[hostile] {len(sent)} requests; statuses {dict(sorted(service.statuses.items()))}")
    print("[hostile] " + ", ".join(f"{k}={v}" for k, v in sorted(per_category.items())))
    assert len(sent) >= MIN_REQUESTS, "run the whole module: the corpus tests send the requests"
    assert sum(service.statuses.values()) == len(sent)
    assert all(400 <= s < 500 for s in service.statuses)
    rows = service.dead_letters()
    assert len(rows) == len(sent)  # every 4xx (there is no 403 here) is dead-lettered
    assert [(r[1], r[2]) for r in rows] == [(c.endpoint, c.reason) for c in sent]
    for (_, _, _, _, body), case in zip(rows, sent, strict=True):
        assert not _leaked(bytes(body), (PASSPHRASE, *case.secrets))
    assert service.stored() == 0
    assert service.landed() == (0, 0)
    metrics = service.client.get("/metrics").text
    lettered = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("fbe_ingest_dead_lettered_total{")
    )
    assert lettered == len(sent)
