"""The immutable raw store: write-once objects plus an append-only manifest (SPEC §2).

Keys look like ``ticks/<symbol>/YYYY/MM/DD/<object>`` (also ``books/``, ``quotes/`` and
``refbars/`` for vendor reference bars). Every object is recorded in the manifest with its size
and SHA-256. The pipeline never overwrites or deletes an object: a second write of a key with
the same bytes is a no-op (idempotent load), with other bytes it is refused.

Every read is verified: :meth:`RawStore.read_verified` compares the bytes with the size and
SHA-256 of the object's manifest entry and refuses a mismatch, so no result is ever computed
from bytes that differ from what was loaded. A damaged manifest (torn or malformed records,
duplicates) never raises while it is scanned: :class:`ManifestScan` keeps the damage for the
integrity job, and a key with two different records is trusted by nobody.

Backends implement :class:`RawStore`; the local directory backend needs nothing. The S3 backend
(:mod:`fbe_pipeline.storage.store_s3`) plugs in behind the same interface.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("ticks", "books", "quotes", "refbars", "candles")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(rf"(?:{'|'.join(KINDS)})/[^/]+/\d{{4}}/\d{{2}}/\d{{2}}/[^/]+")


class RawStoreError(RuntimeError):
    """Base class of raw store failures."""


class ObjectExistsError(RawStoreError):
    """A write would overwrite an existing object with different content."""


class ObjectMissingError(RawStoreError):
    """A key is not in the store."""


class ManifestConflictError(RawStoreError):
    """The manifest holds two different records for one key, so neither can be trusted."""


class TamperedObjectError(RawStoreError):
    """A raw object's bytes differ from its manifest entry (size or SHA-256).

    Attributes
    ----------
    entry : ManifestEntry
        The trusted record.
    size : int
        Size of the bytes read, bytes.
    sha256 : str
        Hex SHA-256 of the bytes read.
    problem : str
        ``size_mismatch`` or ``sha_mismatch``.
    """

    def __init__(self, entry: ManifestEntry, size: int, sha256: str) -> None:
        self.entry = entry
        self.size = size
        self.sha256 = sha256
        self.problem = "size_mismatch" if size != entry.size else "sha_mismatch"
        super().__init__(
            f"raw object {entry.key} does not match its manifest entry ({self.problem}): "
            f"expected {entry.size} bytes with SHA-256 {entry.sha256}, read {size} bytes with "
            f"SHA-256 {sha256}; refusing to use it"
        )


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest record.

    Attributes
    ----------
    key : str
        Object key relative to the store root.
    size : int
        Object size in bytes.
    sha256 : str
        Hex SHA-256 of the object bytes.
    rows : int
        Number of rows in the Parquet object.
    source_file : str
        Name of the vendor file it was loaded from.
    source_sha256 : str
        Hex SHA-256 of that vendor file.
    written_at : str
        ISO-8601 UTC time of the write.
    version_id : str
        Backend version id (``""`` for the local backend).
    """

    key: str
    size: int
    sha256: str
    rows: int
    source_file: str
    source_sha256: str
    written_at: str
    version_id: str = ""

    @classmethod
    def from_json(cls, text: str | bytes) -> ManifestEntry:
        """Parse and validate one manifest record.

        Raises
        ------
        ValueError
            With the reason: not JSON, not an object, missing or unknown fields, a field of the
            wrong type, a SHA-256 that is not 64 hex digits, a negative size or row count, or a
            key outside the ``<kind>/<symbol>/YYYY/MM/DD/<name>`` layout.
        """
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(record) - set(names))
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        required = [n for n, f in names.items() if f.default is MISSING]
        missing = [n for n in required if n not in record]
        if missing:
            raise ValueError(f"missing fields {missing}")
        for name in ("size", "rows"):
            value = record[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        text_fields = ("key", "sha256", "source_file", "source_sha256", "written_at")
        for name in (*text_fields, "version_id"):
            if name in record and not isinstance(record[name], str):
                raise ValueError(f"{name} must be a string, got {record[name]!r}")
        if not _SHA256.fullmatch(record["sha256"]):
            raise ValueError(f"sha256 is not 64 hex digits: {record['sha256']!r}")
        if not _KEY.fullmatch(record["key"]) or ".." in record["key"].split("/"):
            raise ValueError(f"key outside the raw store layout: {record['key']!r}")
        return cls(**record)

    @classmethod
    def now(
        cls,
        key: str,
        data: bytes,
        *,
        rows: int,
        source_file: str,
        source_sha256: str,
        version_id: str = "",
    ) -> ManifestEntry:
        """The entry of ``data`` written under ``key`` at the current UTC time."""
        return cls(
            key=key,
            size=len(data),
            sha256=sha256_bytes(data),
            rows=rows,
            source_file=source_file,
            source_sha256=source_sha256,
            written_at=datetime.now(UTC).isoformat(),
            version_id=version_id,
        )


def object_key(kind: str, symbol: str, trading_date: date, name: str) -> str:
    """Return the key ``<kind>/<symbol>/YYYY/MM/DD/<name>``.

    Raises
    ------
    ValueError
        On an unknown kind or a name containing a path separator.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {KINDS}")
    if "/" in name or not name:
        raise ValueError(f"bad object name {name!r}")
    return f"{kind}/{symbol}/{trading_date:%Y/%m/%d}/{name}"


def partitions_of(keys: Iterable[str]) -> list[tuple[str, date]]:
    """Sorted distinct ``(symbol, trading_date)`` of object keys in the raw store layout
    (``<kind>/<symbol>/YYYY/MM/DD/<name>``); other keys are ignored."""
    found: set[tuple[str, date]] = set()
    for key in keys:
        if _KEY.fullmatch(key):
            _, symbol, y, m, d, _ = key.split("/")
            found.add((symbol, date(int(y), int(m), int(d))))
    return sorted(found, key=lambda p: (p[1], p[0]))


def check_key(key: str) -> str:
    """Return ``key`` if it stays inside the store; raises ``ValueError`` ("bad key") on an
    absolute key or one with a ``..`` segment."""
    if key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"bad key {key!r}")
    return key


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    """Serialise ``frame`` deterministically (same frame, same bytes) as Parquet."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredObject:
    """One stored version of a data object, or a delete marker, as the backend lists it.

    Attributes
    ----------
    key : str
        Object key.
    version_id : str
        Backend version id (``""`` for the local backend, which keeps one version).
    size : int
        Size in bytes (0 for a delete marker).
    is_latest : bool
        Whether this is the version a plain read returns.
    is_delete_marker : bool
        A delete marker (versioned backends): the key looks deleted, its versions remain.
    """

    key: str
    version_id: str
    size: int
    is_latest: bool = True
    is_delete_marker: bool = False


@dataclass
class ManifestScan:
    """Everything read from the manifest, the damaged parts included.

    Attributes
    ----------
    records : list[ManifestEntry]
        Every valid record in write order, duplicates included.
    malformed : list[tuple[str, str]]
        ``(where, reason)`` of each record that could not be parsed or validated: a
        ``manifest.jsonl:<line>`` location (local) or a manifest object key (S3).
    rewritten : list[str]
        Manifest objects with more than one version (S3): only the first is trusted.
    deleted : list[str]
        Manifest objects hidden by a delete marker (S3): their first version is still used.
    """

    records: list[ManifestEntry] = field(default_factory=list)
    malformed: list[tuple[str, str]] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def duplicates(self) -> list[str]:
        """Keys recorded more than once, sorted."""
        seen: set[str] = set()
        dup: set[str] = set()
        for record in self.records:
            (dup if record.key in seen else seen).add(record.key)
        return sorted(dup)

    def conflicts(self) -> list[str]:
        """Keys recorded more than once with a different size, SHA-256 or version, sorted."""
        first: dict[str, ManifestEntry] = {}
        out: set[str] = set()
        for record in self.records:
            known = first.setdefault(record.key, record)
            if (known.size, known.sha256, known.version_id) != (
                record.size,
                record.sha256,
                record.version_id,
            ):
                out.add(record.key)
        return sorted(out)

    def entries(self) -> list[ManifestEntry]:
        """The first record of each key, in write order."""
        seen: set[str] = set()
        out = []
        for record in self.records:
            if record.key not in seen:
                seen.add(record.key)
                out.append(record)
        return out


class RawStore(ABC):
    """Interface of a write-once object store with a manifest.

    Backends implement listing, versioned reads, writes and the manifest scan; every read of
    data goes through :meth:`read_verified`, which refuses bytes that differ from the manifest.
    """

    @abstractmethod
    def stored_objects(self, prefix: str = "") -> list[StoredObject]:
        """Every version (and delete marker) of every data object under the :data:`KINDS`
        prefixes, or under ``prefix`` (a key prefix inside one kind) when given."""

    @abstractmethod
    def read_version(self, key: str, version_id: str = "") -> bytes:
        """Bytes of one version of ``key`` (``""``: the latest), unverified; raises
        :class:`ObjectMissingError` if absent."""

    @abstractmethod
    def put(
        self, key: str, data: bytes, *, rows: int, source_file: str, source_sha256: str
    ) -> bool:
        """Store ``data`` under ``key`` once and record it in the manifest.

        Returns
        -------
        bool
            ``True`` if a new object or manifest record was written, ``False`` if the identical
            object was already stored and recorded (idempotent re-load).

        Raises
        ------
        ObjectExistsError
            If ``key`` exists with different bytes: raw data is never overwritten.
        """

    @abstractmethod
    def scan_manifest(self, prefix: str = "") -> ManifestScan:
        """Read the manifest records of keys starting with ``prefix``, keeping damaged records
        as findings instead of raising (the integrity job reports them)."""

    def manifest(self) -> list[ManifestEntry]:
        """The trusted entry of every key (its first valid record), in write order."""
        return self.scan_manifest().entries()

    def entries(self, prefix: str) -> list[ManifestEntry]:
        """Trusted manifest entries whose key starts with ``prefix``, sorted by key.

        Raises
        ------
        ManifestConflictError
            If a key under ``prefix`` has two different records (fail closed: neither is used).
        """
        scan = self.scan_manifest(prefix)
        conflicts = scan.conflicts()
        if conflicts:
            raise ManifestConflictError(
                f"the manifest records {conflicts[0]} more than once with different content "
                f"({len(conflicts)} such keys); run `fbe integrity`"
            )
        return sorted(scan.entries(), key=lambda e: e.key)

    def keys(self, prefix: str) -> list[str]:
        """Return the manifest keys starting with ``prefix``, sorted."""
        return [e.key for e in self.entries(prefix)]

    def read_verified(self, entry: ManifestEntry) -> bytes:
        """Bytes of the version ``entry`` pins, checked against its size and SHA-256.

        Raises
        ------
        ObjectMissingError
            If that version does not exist.
        TamperedObjectError
            If the bytes differ from the entry.
        """
        data = self.read_version(entry.key, entry.version_id)
        digest = sha256_bytes(data)
        if len(data) != entry.size or digest != entry.sha256:
            raise TamperedObjectError(entry, len(data), digest)
        return data

    def get(self, key: str) -> bytes:
        """The verified bytes of ``key`` (:meth:`read_verified` of its manifest entry).

        Raises
        ------
        ValueError
            On an absolute key or one with a ``..`` segment.
        ObjectMissingError
            If ``key`` has no manifest entry or its object is missing.
        TamperedObjectError
            If the object differs from its entry.
        """
        entry = next((e for e in self.entries(check_key(key)) if e.key == key), None)
        if entry is None:
            raise ObjectMissingError(f"raw object {key} is not in the manifest")
        return self.read_verified(entry)

    def read_frame(self, key: str) -> pd.DataFrame:
        """Return the verified Parquet object at ``key`` as a DataFrame."""
        return pq.read_table(io.BytesIO(self.get(key))).to_pandas()

    def read_partition(self, kind: str, symbol: str, trading_date: date) -> pd.DataFrame | None:
        """Concatenate every object of one kind, symbol and trading date, each verified
        against its manifest entry before use.

        Returns ``None`` when there is no object (the partition has no raw data).

        Raises
        ------
        TamperedObjectError, ObjectMissingError, ManifestConflictError
            If an object cannot be trusted: no partial partition is ever returned.
        """
        prefix = f"{kind}/{symbol}/{trading_date:%Y/%m/%d}/"
        frames = [
            pq.read_table(io.BytesIO(self.read_verified(e))).to_pandas()
            for e in self.entries(prefix)
        ]
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def partitions(self, kind: str = "ticks") -> list[tuple[str, date]]:
        """Return the sorted distinct ``(symbol, trading_date)`` pairs holding ``kind`` objects
        (by their manifest keys; the objects themselves are verified when read)."""
        return partitions_of(e.key for e in self.scan_manifest(kind + "/").entries())


class LocalRawStore(RawStore):
    """Raw store in a local directory; objects are created with ``O_EXCL`` and made read-only.

    Parameters
    ----------
    root : Path
        Store directory; the manifest is ``root/manifest.jsonl`` (one JSON object per line).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._manifest_path = self.root / "manifest.jsonl"
        # The parsed manifest and the (size, mtime) it was parsed at: the file only grows, so
        # an unchanged stat means unchanged records, and each run reads it a dozen times.
        self._parsed: tuple[tuple[int, int], ManifestScan] | None = None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(
        self, key: str, data: bytes, *, rows: int, source_file: str, source_sha256: str
    ) -> bool:
        path = self._path(key)
        digest = sha256_bytes(data)
        if path.exists():
            if sha256_file(path) != digest:
                raise ObjectExistsError(
                    f"refusing to overwrite raw object {key}: it exists with different content "
                    "(raw data is immutable; load corrected data under a new source file)"
                )
            if any(e.key == key for e in self.entries(key)):
                return False
            # The object was linked but the process died before its manifest record: record it.
        else:
            self._create(path, key, data)
        entry = ManifestEntry.now(
            key, data, rows=rows, source_file=source_file, source_sha256=source_sha256
        )
        self._append(json.dumps(asdict(entry), sort_keys=True))
        return True

    def _create(self, path: Path, key: str, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            # link() fails if the target exists, so a concurrent writer cannot be overwritten.
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise ObjectExistsError(f"raw object {key} was created concurrently") from exc
        finally:
            os.unlink(tmp)

    def _append(self, line: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._manifest_path.open("a+b") as fh:
            # A writer killed mid-line leaves a torn record; start on a fresh line so the torn
            # one stays a single malformed record instead of corrupting this one too.
            end = fh.seek(0, os.SEEK_END)
            prefix = b""
            if end:
                fh.seek(end - 1)
                prefix = b"" if fh.read(1) == b"\n" else b"\n"
            fh.write(prefix + line.encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def scan_manifest(self, prefix: str = "") -> ManifestScan:
        full = self._parse()
        return ManifestScan(
            records=[r for r in full.records if r.key.startswith(prefix)],
            malformed=list(full.malformed),
        )

    def _parse(self) -> ManifestScan:
        """Every record of ``manifest.jsonl``, parsed again only when the file changed."""
        try:
            stat = self._manifest_path.stat()
        except FileNotFoundError:
            return ManifestScan()
        version = (stat.st_size, stat.st_mtime_ns)
        if self._parsed is not None and self._parsed[0] == version:
            return self._parsed[1]
        scan = ManifestScan()
        with self._manifest_path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    scan.records.append(ManifestEntry.from_json(line))
                except ValueError as exc:
                    scan.malformed.append((f"manifest.jsonl:{number}", str(exc)))
        self._parsed = (version, scan)
        return scan

    def stored_objects(self, prefix: str = "") -> list[StoredObject]:
        found = []
        bases = [self._path(prefix.rsplit("/", 1)[0])] if prefix else [self.root / k for k in KINDS]
        for base in bases:
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.name.startswith(".tmp-"):
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        size = path.stat().st_size
                        found.append(StoredObject(key=key, version_id="", size=size))
        return found

    def read_version(self, key: str, version_id: str = "") -> bytes:
        path = self._path(key)
        if not path.exists():
            raise ObjectMissingError(f"raw object {key} is missing from {self.root}")
        return path.read_bytes()
