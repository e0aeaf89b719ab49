"""Integrity verification of the raw store: manifest versus stored objects (SPEC §2, §7).

Every manifest entry must have its object (the recorded version, for a versioned backend) with
the recorded size and SHA-256; every stored data object must be in the manifest; an object
must have exactly one version and no delete marker: on a write-once store a second version or
a delete marker means someone wrote around the lock. The manifest itself is checked too:
malformed or torn records, keys recorded twice, and (S3) manifest objects rewritten or hidden
by a delete marker are findings, never a crash and never trusted.

Two entry points: :func:`verify_store` for the whole store (the integrity job), and
:func:`verify_partition` for the objects of one partition, the check that must pass before the
pipeline reads a partition.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

from fbe_pipeline.storage.store import (
    KINDS,
    ManifestEntry,
    ObjectMissingError,
    RawStore,
    StoredObject,
    TamperedObjectError,
)

MANIFEST_PROBLEMS = ("malformed_manifest", "duplicate_entry", "manifest_rewritten")
OBJECT_PROBLEMS = (
    "missing",
    "size_mismatch",
    "sha_mismatch",
    "extra_versions",
    "delete_marker",
    "unmanifested",
)


@dataclass
class IntegrityReport:
    """Findings of one verification run; each list holds offending object keys.

    Attributes
    ----------
    checked : int
        Manifest entries verified.
    missing : list[str]
        Manifest entries whose object (version) does not exist.
    size_mismatch : list[str]
        Objects whose size differs from the manifest.
    sha_mismatch : list[str]
        Objects whose SHA-256 differs from the manifest (same size, changed bytes included).
    extra_versions : list[str]
        Objects with more than one stored version.
    delete_marker : list[str]
        Data keys, and manifest object keys (``_manifest/...``), hidden by a delete marker.
    unmanifested : list[str]
        Stored objects with no manifest entry.
    malformed_manifest : list[str]
        Manifest records that cannot be parsed or validated, as ``<where>: <reason>`` (where is
        ``manifest.jsonl:<line>`` locally, the manifest object's key on S3).
    duplicate_entry : list[str]
        Keys recorded more than once in the manifest.
    manifest_rewritten : list[str]
        Manifest objects with more than one version (S3); only the first is ever trusted.
    seconds : float
        Wall time of the run.
    """

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    sha_mismatch: list[str] = field(default_factory=list)
    extra_versions: list[str] = field(default_factory=list)
    delete_marker: list[str] = field(default_factory=list)
    unmanifested: list[str] = field(default_factory=list)
    malformed_manifest: list[str] = field(default_factory=list)
    duplicate_entry: list[str] = field(default_factory=list)
    manifest_rewritten: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No finding at all."""
        return not self.findings()

    def findings(self) -> list[tuple[str, str]]:
        """``(problem, key)`` pairs, sorted, for reports and CLI output."""
        out = [
            (problem, key)
            for problem in (*OBJECT_PROBLEMS, *MANIFEST_PROBLEMS)
            for key in getattr(self, problem)
        ]
        return sorted(out)


@dataclass(frozen=True)
class Finding:
    """One reason not to trust a partition's raw data.

    Attributes
    ----------
    key : str
        The object key.
    problem : str
        ``missing``, ``size_mismatch``, ``sha_mismatch``, ``unmanifested``,
        ``conflicting_entries``, ``not_first_version`` or ``no_objects``.
    expected_sha256, actual_sha256 : str
        Hex SHA-256 from the manifest and of the bytes read (``""`` when not applicable).
    expected_size, actual_size : int
        Sizes in bytes (-1 when not applicable).
    """

    key: str
    problem: str
    expected_sha256: str = ""
    actual_sha256: str = ""
    expected_size: int = -1
    actual_size: int = -1


def _verdict(store: RawStore, entry: ManifestEntry) -> tuple[str, str, int]:
    """``(problem, actual SHA-256, actual size)``; problem ``""`` when the object matches."""
    try:
        store.read_verified(entry)
    except ObjectMissingError:
        return "missing", "", -1
    except TamperedObjectError as exc:
        return exc.problem, exc.sha256, exc.size
    return "", entry.sha256, entry.size


def _versions(objects: list[StoredObject]) -> tuple[dict[str, list[str]], set[str]]:
    """Version ids per key in listing order (newest first on S3), and keys with delete markers."""
    versions: dict[str, list[str]] = {}
    markers: set[str] = set()
    for obj in objects:
        if obj.is_delete_marker:
            markers.add(obj.key)
        else:
            versions.setdefault(obj.key, []).append(obj.version_id)
    return versions, markers


def verify_store(store: RawStore, workers: int = 8) -> IntegrityReport:
    """Verify the manifest and every manifest entry against the stored objects.

    Reads every object once (SHA-256 over its bytes), so the cost is linear in stored bytes;
    reads run on ``workers`` threads because on object storage they wait on the network. A
    damaged manifest is reported, never raised: the rest of the store is still verified.

    Parameters
    ----------
    store : RawStore
        The store to verify.
    workers : int
        Concurrent object reads (>= 1).

    Returns
    -------
    IntegrityReport
        Findings; ``report.ok`` when the store is intact.
    """
    start = time.perf_counter()
    report = IntegrityReport()
    scan = store.scan_manifest()
    report.malformed_manifest = sorted(f"{where}: {reason}" for where, reason in scan.malformed)
    report.duplicate_entry = scan.duplicates()
    report.manifest_rewritten = scan.rewritten
    entries = {e.key: e for e in scan.entries()}
    versions, markers = _versions(store.stored_objects())
    to_read = []
    for key, entry in sorted(entries.items()):
        report.checked += 1
        stored = versions.get(key, [])
        if not stored or (entry.version_id and entry.version_id not in stored):
            report.missing.append(key)
        else:
            to_read.append(entry)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        verdicts = pool.map(lambda e: _verdict(store, e), to_read)
        for entry, (problem, _, _) in zip(to_read, verdicts, strict=True):
            if problem:
                getattr(report, problem).append(entry.key)
    report.extra_versions = sorted(k for k, v in versions.items() if len(v) > 1)
    report.delete_marker = sorted(markers | set(scan.deleted))
    report.unmanifested = sorted(k for k in versions if k not in entries)
    report.seconds = time.perf_counter() - start
    return report


def verify_partition(store: RawStore, symbol: str, trading_date: date) -> list[Finding]:
    """Check every raw object of one partition before the pipeline uses it.

    For each kind (ticks, quotes, books, reference bars): every manifest entry's pinned version
    must exist, be the key's first version (a versioned backend lists newest first) and match
    the recorded size and SHA-256; every stored object must have a manifest entry (an entry lost
    from the manifest would silently drop data); a key recorded twice with different content
    is trusted by neither record; and the partition must hold at least one tick object (or,
    for a session loaded from vendor 1-minute bars, one candles object).

    Parameters
    ----------
    store : RawStore
        The raw store.
    symbol : str
        Instrument symbol.
    trading_date : datetime.date
        The partition's trading date.

    Returns
    -------
    list[Finding]
        Empty when the partition may be used; otherwise every problem found, by key.
    """
    findings: list[Finding] = []
    tick_entries = 0
    for kind in KINDS:
        prefix = f"{kind}/{symbol}/{trading_date:%Y/%m/%d}/"
        scan = store.scan_manifest(prefix)
        conflicts = set(scan.conflicts())
        findings += [Finding(k, "conflicting_entries") for k in sorted(conflicts)]
        entries = [e for e in scan.entries() if e.key not in conflicts]
        tick_entries += len(entries) if kind in ("ticks", "candles") else 0
        versions, _ = _versions(store.stored_objects(prefix))
        recorded = {e.key for e in scan.entries()}
        findings += [Finding(k, "unmanifested") for k in sorted(versions) if k not in recorded]
        for entry in entries:
            listed = versions.get(entry.key, [])
            if entry.version_id and listed and listed[-1] != entry.version_id:
                findings.append(Finding(entry.key, "not_first_version"))
                continue
            problem, sha, size = _verdict(store, entry)
            if problem:
                findings.append(Finding(entry.key, problem, entry.sha256, sha, entry.size, size))
    if tick_entries == 0 and not findings:
        key = f"ticks/{symbol}/{trading_date:%Y/%m/%d}/"
        findings.append(Finding(key, "no_objects"))
    return findings
