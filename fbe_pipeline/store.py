"""The immutable raw store: write-once objects plus an append-only manifest (SPEC §2).

Keys look like ``ticks/<symbol>/YYYY/MM/DD/<object>`` (also ``books/``, ``quotes/`` and
``refbars/`` for vendor reference bars). Every object is recorded in the manifest with its size
and SHA-256. The pipeline never overwrites or deletes an object: a second write of a key with
the same bytes is a no-op (idempotent load), with other bytes it is refused.

Backends implement :class:`RawStore`; the local directory backend needs nothing. An S3 backend
plugs in behind the same interface.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("ticks", "books", "quotes", "refbars")


class RawStoreError(RuntimeError):
    """Base class of raw store failures."""


class ObjectExistsError(RawStoreError):
    """A write would overwrite an existing object with different content."""


class ObjectMissingError(RawStoreError):
    """A key is not in the store."""


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
    """One stored version of a data object, as the backend lists it.

    Attributes
    ----------
    key : str
        Object key.
    version_id : str
        Backend version id (``""`` for the local backend, which keeps one version).
    size : int
        Size in bytes.
    is_latest : bool
        Whether this is the version a plain read returns.
    """

    key: str
    version_id: str
    size: int
    is_latest: bool = True


class RawStore(ABC):
    """Interface of a write-once object store with a manifest."""

    @abstractmethod
    def stored_objects(self) -> list[StoredObject]:
        """Every version of every data object under the :data:`KINDS` prefixes."""

    @abstractmethod
    def read_version(self, key: str, version_id: str = "") -> bytes:
        """Bytes of one version of ``key`` (``""``: the latest); raises
        :class:`ObjectMissingError` if absent."""

    @abstractmethod
    def put(
        self, key: str, data: bytes, *, rows: int, source_file: str, source_sha256: str
    ) -> bool:
        """Store ``data`` under ``key`` once and record it in the manifest.

        Returns
        -------
        bool
            ``True`` if a new object was written, ``False`` if the identical object was already
            stored (idempotent re-load).

        Raises
        ------
        ObjectExistsError
            If ``key`` exists with different bytes: raw data is never overwritten.
        """

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes of ``key``; raises :class:`ObjectMissingError` if absent."""

    @abstractmethod
    def manifest(self) -> list[ManifestEntry]:
        """Return every manifest entry, in write order."""

    def entries(self, prefix: str) -> list[ManifestEntry]:
        """Manifest entries whose key starts with ``prefix``, sorted by key.

        Backends with a large remote manifest override this to read only that prefix.
        """
        return sorted((e for e in self.manifest() if e.key.startswith(prefix)), key=lambda e: e.key)

    def keys(self, prefix: str) -> list[str]:
        """Return the manifest keys starting with ``prefix``, sorted."""
        return [e.key for e in self.entries(prefix)]

    def read_frame(self, key: str) -> pd.DataFrame:
        """Return the Parquet object at ``key`` as a DataFrame."""
        return pq.read_table(io.BytesIO(self.get(key))).to_pandas()

    def read_partition(self, kind: str, symbol: str, trading_date: date) -> pd.DataFrame | None:
        """Concatenate every object of one kind, symbol and trading date.

        Returns ``None`` when there is no object (the partition has no raw data).
        """
        prefix = f"{kind}/{symbol}/{trading_date:%Y/%m/%d}/"
        frames = [self.read_frame(k) for k in self.keys(prefix)]
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def partitions(self, kind: str = "ticks") -> list[tuple[str, date]]:
        """Return the sorted distinct ``(symbol, trading_date)`` pairs holding ``kind`` objects."""
        found: set[tuple[str, date]] = set()
        for entry in self.manifest():
            parts = entry.key.split("/")
            if parts[0] == kind and len(parts) == 6:
                found.add((parts[1], date(int(parts[2]), int(parts[3]), int(parts[4]))))
        return sorted(found, key=lambda p: (p[1], p[0]))


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

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad key {key!r}")
        return self.root / key

    def put(
        self, key: str, data: bytes, *, rows: int, source_file: str, source_sha256: str
    ) -> bool:
        path = self._path(key)
        digest = sha256_bytes(data)
        if path.exists():
            if sha256_file(path) == digest:
                return False
            raise ObjectExistsError(
                f"refusing to overwrite raw object {key}: it exists with different content "
                "(raw data is immutable; load corrected data under a new source file)"
            )
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
        entry = ManifestEntry.now(
            key, data, rows=rows, source_file=source_file, source_sha256=source_sha256
        )
        with self._manifest_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.exists():
            raise ObjectMissingError(f"raw object {key} is missing from {self.root}")
        return path.read_bytes()

    def manifest(self) -> list[ManifestEntry]:
        return list(self._iter_manifest())

    def stored_objects(self) -> list[StoredObject]:
        found = []
        for kind in KINDS:
            base = self.root / kind
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.name.startswith(".tmp-"):
                    key = path.relative_to(self.root).as_posix()
                    found.append(StoredObject(key=key, version_id="", size=path.stat().st_size))
        return found

    def read_version(self, key: str, version_id: str = "") -> bytes:
        return self.get(key)

    def _iter_manifest(self) -> Iterator[ManifestEntry]:
        if not self._manifest_path.exists():
            return
        with self._manifest_path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield ManifestEntry(**json.loads(line))
