"""Tests of the immutable raw store (SPEC §2): write-once objects, manifest, key layout."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from fbe_pipeline.storage.store import (
    LocalRawStore,
    ObjectExistsError,
    ObjectMissingError,
    frame_to_parquet,
    object_key,
)

DAY = date(2013, 10, 7)


def _ticks(prices: list[float], start_seq: int = 0) -> pd.DataFrame:
    n = len(prices)
    return pd.DataFrame(
        {
            "symbol": ["SPY"] * n,
            "ts_event": [1_381_152_600_000_000_000 + i * 1_000_000 for i in range(n)],
            "price": prices,
            "size": [100.0] * n,
            "seq": list(range(start_seq, start_seq + n)),
        }
    )


def _put(store: LocalRawStore, key: str, data: bytes, rows: int = 1) -> bool:
    return store.put(key, data, rows=rows, source_file="src.csv", source_sha256="ab" * 32)


@pytest.fixture
def store(tmp_path: Path) -> LocalRawStore:
    return LocalRawStore(tmp_path / "raw")


def test_object_key_layout_is_kind_symbol_yyyy_mm_dd_name() -> None:
    assert object_key("ticks", "SPY", DAY, "a.parquet") == "ticks/SPY/2013/10/07/a.parquet"
    assert object_key("books", "ES", date(2023, 12, 26), "b") == "books/ES/2023/12/26/b"


@pytest.mark.parametrize(
    ("kind", "name"),
    [("trades", "a.parquet"), ("ticks", "sub/a.parquet"), ("ticks", "")],
)
def test_object_key_rejects_unknown_kind_and_bad_names(kind: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown object kind|bad object name"):
        object_key(kind, "SPY", DAY, name)


def test_first_put_writes_object_and_manifest_entry_with_size_and_sha256(
    store: LocalRawStore,
) -> None:
    key = object_key("ticks", "SPY", DAY, "a.parquet")
    data = frame_to_parquet(_ticks([167.41, 167.42, 167.40]))

    assert _put(store, key, data, rows=3) is True

    on_disk = (store.root / key).read_bytes()
    assert on_disk == data
    [entry] = store.manifest()
    assert entry.key == key
    assert entry.size == len(on_disk)
    assert entry.sha256 == hashlib.sha256(on_disk).hexdigest()
    assert entry.rows == 3
    assert entry.source_file == "src.csv"
    assert entry.source_sha256 == "ab" * 32
    # The manifest is one JSON object per line, on disk.
    lines = (store.root / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [key]


def test_stored_object_is_read_only_on_disk(store: LocalRawStore) -> None:
    key = object_key("ticks", "SPY", DAY, "a.parquet")
    _put(store, key, frame_to_parquet(_ticks([1.0])))
    mode = stat.S_IMODE((store.root / key).stat().st_mode)
    assert mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0


def test_second_put_of_same_bytes_returns_false_and_adds_no_manifest_entry(
    store: LocalRawStore,
) -> None:
    key = object_key("ticks", "SPY", DAY, "a.parquet")
    data = frame_to_parquet(_ticks([1.0, 2.0]))
    assert _put(store, key, data, rows=2) is True
    manifest_before = (store.root / "manifest.jsonl").read_bytes()

    assert _put(store, key, data, rows=2) is False

    assert (store.root / "manifest.jsonl").read_bytes() == manifest_before
    assert len(store.manifest()) == 1


def test_put_of_different_bytes_under_existing_key_is_refused_and_keeps_original(
    store: LocalRawStore,
) -> None:
    key = object_key("ticks", "SPY", DAY, "a.parquet")
    original = frame_to_parquet(_ticks([1.0]))
    _put(store, key, original)

    with pytest.raises(ObjectExistsError, match=r"refusing to overwrite raw object .*a\.parquet"):
        _put(store, key, frame_to_parquet(_ticks([2.0])))

    assert store.get(key) == original
    assert len(store.manifest()) == 1


def test_same_frame_serialises_to_same_bytes() -> None:
    assert frame_to_parquet(_ticks([1.0, 2.0])) == frame_to_parquet(_ticks([1.0, 2.0]))


@pytest.mark.parametrize(
    "key",
    ["/etc/passwd", "ticks/../../escape.parquet", "../outside", "ticks/SPY/2013/10/07/.."],
)
def test_keys_with_parent_segments_or_absolute_paths_are_rejected(
    store: LocalRawStore, key: str
) -> None:
    with pytest.raises(ValueError, match="bad key"):
        _put(store, key, b"x")
    with pytest.raises(ValueError, match="bad key"):
        store.get(key)
    assert store.manifest() == []


def test_get_of_missing_object_raises_object_missing_error(store: LocalRawStore) -> None:
    with pytest.raises(ObjectMissingError, match=r"ticks/SPY/2013/10/07/nope\.parquet"):
        store.get("ticks/SPY/2013/10/07/nope.parquet")


def test_partitions_lists_distinct_symbol_dates_of_one_kind_sorted_by_date(
    store: LocalRawStore,
) -> None:
    one = frame_to_parquet(_ticks([1.0]))
    _put(store, object_key("ticks", "SPY", date(2013, 10, 8), "a"), one)
    _put(store, object_key("ticks", "SPY", date(2013, 10, 8), "b"), one)
    _put(store, object_key("ticks", "GC", date(2013, 10, 8), "a"), one)
    _put(store, object_key("ticks", "SPY", DAY, "a"), one)
    _put(store, object_key("books", "ES", date(2023, 12, 26), "a"), one)

    assert store.partitions() == [
        ("SPY", DAY),
        ("GC", date(2013, 10, 8)),
        ("SPY", date(2013, 10, 8)),
    ]
    assert store.partitions("books") == [("ES", date(2023, 12, 26))]
    assert store.partitions("quotes") == []


def test_read_partition_concatenates_every_object_of_the_day_in_key_order(
    store: LocalRawStore,
) -> None:
    _put(store, object_key("ticks", "SPY", DAY, "b.parquet"), frame_to_parquet(_ticks([3.0], 10)))
    _put(
        store,
        object_key("ticks", "SPY", DAY, "a.parquet"),
        frame_to_parquet(_ticks([1.0, 2.0])),
        rows=2,
    )
    _put(store, object_key("ticks", "SPY", date(2013, 10, 8), "c"), frame_to_parquet(_ticks([9.0])))
    _put(store, object_key("ticks", "BAC", DAY, "d"), frame_to_parquet(_ticks([8.0])))

    frame = store.read_partition("ticks", "SPY", DAY)

    assert frame is not None
    assert frame["price"].tolist() == [1.0, 2.0, 3.0]
    assert frame["seq"].tolist() == [0, 1, 10]
    assert frame.index.tolist() == [0, 1, 2]


def test_read_partition_of_a_day_without_objects_is_none(store: LocalRawStore) -> None:
    _put(store, object_key("ticks", "SPY", DAY, "a"), frame_to_parquet(_ticks([1.0])))
    assert store.read_partition("ticks", "SPY", date(2013, 10, 9)) is None
    assert store.read_partition("books", "SPY", DAY) is None


def test_keys_filters_manifest_by_prefix_sorted(store: LocalRawStore) -> None:
    data = frame_to_parquet(_ticks([1.0]))
    for name in ("z", "a", "m"):
        _put(store, object_key("ticks", "SPY", DAY, name), data)
    _put(store, object_key("ticks", "SPYX", DAY, "a"), data)
    assert store.keys("ticks/SPY/") == [
        "ticks/SPY/2013/10/07/a",
        "ticks/SPY/2013/10/07/m",
        "ticks/SPY/2013/10/07/z",
    ]


def test_partitions_of_keys_ignores_what_is_not_a_raw_object_key() -> None:
    from fbe_pipeline.storage.store import partitions_of

    keys = [
        "ticks/SPY/2013/10/08/a.parquet",
        "ticks/SPY/2013/10/07/b.parquet",
        "ticks/SPY/2013/10/07/c.parquet",
        "quotes/BAC/2013/10/07/q.parquet",
        "ticks/SPY/2013/10/notes.txt",
        "_manifest/ticks/SPY/2013/10/09/x.parquet",
    ]
    assert partitions_of(keys) == [
        ("BAC", DAY),
        ("SPY", DAY),
        ("SPY", date(2013, 10, 8)),
    ]
