"""Integrity verification of the raw store: manifest versus stored objects (SPEC §2, §7).

Every manifest entry must have its object (the recorded version, for a versioned backend) with
the recorded size and SHA-256; every stored data object must be in the manifest; and an object
must have exactly one version: on a write-once store a second version means someone wrote
around the lock.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fbe_pipeline.store import ManifestEntry, ObjectMissingError, RawStore, sha256_bytes


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
    unmanifested : list[str]
        Stored objects with no manifest entry.
    seconds : float
        Wall time of the run.
    """

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    sha_mismatch: list[str] = field(default_factory=list)
    extra_versions: list[str] = field(default_factory=list)
    unmanifested: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No finding at all."""
        return not (
            self.missing
            or self.size_mismatch
            or self.sha_mismatch
            or self.extra_versions
            or self.unmanifested
        )

    def findings(self) -> list[tuple[str, str]]:
        """``(problem, key)`` pairs, sorted, for reports and CLI output."""
        out = [
            (problem, key)
            for problem in (
                "missing",
                "size_mismatch",
                "sha_mismatch",
                "extra_versions",
                "unmanifested",
            )
            for key in getattr(self, problem)
        ]
        return sorted(out)


def _verdict(store: RawStore, entry: ManifestEntry) -> str:
    """``""`` when the object matches its entry, else the problem's name."""
    try:
        data = store.read_version(entry.key, entry.version_id)
    except ObjectMissingError:
        return "missing"
    if len(data) != entry.size:
        return "size_mismatch"
    if sha256_bytes(data) != entry.sha256:
        return "sha_mismatch"
    return ""


def verify_store(store: RawStore, workers: int = 8) -> IntegrityReport:
    """Verify every manifest entry against the stored objects.

    Reads every object once (SHA-256 over its bytes), so the cost is linear in stored bytes;
    reads run on ``workers`` threads because on object storage they wait on the network.

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
    entries = {e.key: e for e in store.manifest()}
    versions: dict[str, list[str]] = {}
    for obj in store.stored_objects():
        versions.setdefault(obj.key, []).append(obj.version_id)
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
        for entry, problem in zip(to_read, verdicts, strict=True):
            if problem:
                getattr(report, problem).append(entry.key)
    report.extra_versions = sorted(k for k, v in versions.items() if len(v) > 1)
    report.unmanifested = sorted(k for k in versions if k not in entries)
    report.seconds = time.perf_counter() - start
    return report
