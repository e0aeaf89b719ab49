"""Raw store on S3-compatible object storage (AWS S3, MinIO) with versioning and object lock.

The bucket itself refuses what the pipeline must never do: every write is conditional
(``If-None-Match: *``), so an existing key cannot be overwritten through FBE, and object lock in
COMPLIANCE mode refuses deleting or shortening the retention of any stored version. The manifest
is a set of write-once JSON objects under ``_manifest/`` (one per data object) recording key,
version id, size and SHA-256; reads are pinned to the manifest's version id, so a version
written around the lock by someone else never reaches the pipeline (the integrity job reports
it).

References: AWS S3 user guide, "Conditional writes" (``If-None-Match``), "Object Lock", "Using
versioning in S3 buckets".
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from fbe_pipeline.store import (
    KINDS,
    ManifestEntry,
    ObjectExistsError,
    ObjectMissingError,
    RawStore,
    RawStoreError,
    StoredObject,
    sha256_bytes,
)

MANIFEST_PREFIX = "_manifest/"
DEFAULT_RETENTION_DAYS = 365


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def init_bucket(client: Any, bucket: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> str:
    """Create ``bucket`` with versioning and COMPLIANCE object lock; safe to re-run.

    Parameters
    ----------
    client : botocore S3 client
        E.g. from ``dagster_aws.s3.S3Resource.get_client()``.
    bucket : str
        Bucket name.
    retention_days : int
        Default retention of every new object version, days (> 0).

    Returns
    -------
    str
        ``"created"`` or ``"exists"``.

    Raises
    ------
    RawStoreError
        If the bucket exists without object lock (it cannot be enabled afterwards on every
        backend) or with a different retention mode.
    ValueError
        If ``retention_days`` is not positive.
    """
    if retention_days <= 0:
        raise ValueError("retention_days must be > 0")
    # us-east-1 answers 200 to re-creating a bucket one owns, so ask first.
    try:
        client.head_bucket(Bucket=bucket)
        status = "exists"
    except Exception as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        status = "created"
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        current = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except Exception as exc:
        raise RawStoreError(
            f"bucket {bucket} has no object lock; create a new bucket with `fbe storage init`"
        ) from exc
    rule = current.get("Rule", {}).get("DefaultRetention", {})
    if rule and rule.get("Mode") != "COMPLIANCE":
        raise RawStoreError(
            f"bucket {bucket} uses object lock mode {rule.get('Mode')}, not COMPLIANCE"
        )
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": retention_days}},
        },
    )
    return status


class S3RawStore(RawStore):
    """Raw store in an S3 bucket prepared by :func:`init_bucket`.

    Parameters
    ----------
    client : botocore S3 client
        Credentials come from the environment (the client's default chain), never from FBE.
    bucket : str
        Bucket name.
    prefix : str
        Optional key prefix inside the bucket (``""`` or ending in ``/``).
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        # Manifest entries fetched so far; entries are write-once, so a cached one never stales.
        self._entries: dict[str, ManifestEntry] = {}

    def _k(self, key: str) -> str:
        return self.prefix + key

    def put(
        self, key: str, data: bytes, *, rows: int, source_file: str, source_sha256: str
    ) -> bool:
        digest = sha256_bytes(data)
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self._k(key),
                Body=data,
                IfNoneMatch="*",
                Metadata={"sha256": digest},
            )
        except Exception as exc:
            if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise
            known = next((e for e in self.entries(key) if e.key == key), None)
            if known is not None and known.sha256 == digest:
                return False
            raise ObjectExistsError(
                f"refusing to overwrite raw object s3://{self.bucket}/{self._k(key)}: the store "
                "refused the conditional write (If-None-Match: *) because the key exists "
                "(raw data is immutable; load corrected data under a new source file)"
            ) from exc
        entry = ManifestEntry.now(
            key,
            data,
            rows=rows,
            source_file=source_file,
            source_sha256=source_sha256,
            version_id=str(response.get("VersionId", "")),
        )
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._k(MANIFEST_PREFIX + key + ".json"),
            Body=json.dumps(asdict(entry), sort_keys=True).encode(),
            IfNoneMatch="*",
        )
        self._entries[key] = entry
        return True

    def entries(self, prefix: str) -> list[ManifestEntry]:
        """Manifest entries under ``prefix``: one LIST of ``_manifest/<prefix>`` and a GET per
        entry not fetched before, so reading a partition never reads the whole manifest."""
        names = self._list_keys(MANIFEST_PREFIX + prefix)
        keys = [n[len(MANIFEST_PREFIX) : -len(".json")] for n in names if n.endswith(".json")]
        missing = [k for k in keys if k not in self._entries]

        def fetch(key: str) -> ManifestEntry:
            name = self._k(MANIFEST_PREFIX + key + ".json")
            return ManifestEntry(
                **json.loads(self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read())
            )

        # One small GET per entry: run them concurrently, they wait on the network.
        with ThreadPoolExecutor(max_workers=8) as pool:
            for entry in pool.map(fetch, missing):
                self._entries[entry.key] = entry
        return sorted((self._entries[k] for k in keys), key=lambda e: e.key)

    def _list_keys(self, sub: str) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(sub)):
            keys += [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
        return sorted(keys)

    def manifest(self) -> list[ManifestEntry]:
        return sorted(self.entries(""), key=lambda e: (e.written_at, e.key))

    def get(self, key: str) -> bytes:
        entry = next((e for e in self.entries(key) if e.key == key), None)
        return self.read_version(key, entry.version_id if entry else "")

    def read_version(self, key: str, version_id: str = "") -> bytes:
        args: dict[str, str] = {"Bucket": self.bucket, "Key": self._k(key)}
        if version_id:
            args["VersionId"] = version_id
        try:
            return bytes(self.client.get_object(**args)["Body"].read())
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "NoSuchVersion", "404"):
                raise ObjectMissingError(
                    f"raw object s3://{self.bucket}/{self._k(key)} "
                    f"(version {version_id or 'latest'}) is missing"
                ) from exc
            raise

    def stored_objects(self) -> list[StoredObject]:
        found = []
        paginator = self.client.get_paginator("list_object_versions")
        for kind in KINDS:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(kind + "/")):
                for v in page.get("Versions", []):
                    found.append(
                        StoredObject(
                            key=v["Key"][len(self.prefix) :],
                            version_id=str(v.get("VersionId", "")),
                            size=int(v["Size"]),
                            is_latest=bool(v.get("IsLatest", False)),
                        )
                    )
        return sorted(found, key=lambda o: (o.key, o.version_id))
