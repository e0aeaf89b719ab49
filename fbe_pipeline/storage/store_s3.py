"""Raw store on S3-compatible object storage (AWS S3, MinIO) with versioning and object lock.

The bucket itself refuses what the pipeline must never do: every write is conditional
(``If-None-Match: *``), so an existing key cannot be overwritten through FBE, and object lock in
COMPLIANCE mode refuses deleting or shortening the retention of any stored version. The manifest
is a set of write-once JSON objects under ``_manifest/`` (one per data object) recording key,
version id, size and SHA-256; reads are pinned to the manifest's version id and verified
against its SHA-256, so a version written around the lock by someone else never reaches the
pipeline (the integrity job reports it). A manifest object is trusted only in its first
version: a forged later version, or a delete marker, changes nothing that is read.

References: AWS S3 user guide, "Conditional writes" (``If-None-Match``), "Object Lock", "Using
versioning in S3 buckets".
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import date
from typing import Any

from fbe_pipeline.storage.store import (
    KINDS,
    ManifestEntry,
    ManifestScan,
    ObjectExistsError,
    ObjectMissingError,
    RawStore,
    RawStoreError,
    StoredObject,
    partitions_of,
    sha256_bytes,
)

MANIFEST_PREFIX = "_manifest/"
DEFAULT_RETENTION_DAYS = 365


AWS_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def quiet_aws_loggers() -> None:
    """Hold the AWS SDK's and urllib3's loggers at WARNING whatever the root level is.

    ``FBE_LOG_LEVEL=DEBUG`` must never print credentials; botocore logs signed request headers
    and the credentials it found at DEBUG, so its loggers never go below WARNING.
    """
    for name in AWS_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


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
        # Manifest record bodies fetched so far, by (manifest key, version id): a version's
        # bytes never change, so a cached body never stales.
        self._records: dict[tuple[str, str], bytes] = {}

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
            version_id = str(response.get("VersionId", ""))
        except Exception as exc:
            if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise
            known = next((e for e in self.entries(key) if e.key == key), None)
            if known is not None and known.sha256 == digest:
                return False
            version_id = self._unrecorded_first_version(key, digest) if known is None else ""
            if not version_id:
                raise ObjectExistsError(
                    f"refusing to overwrite raw object s3://{self.bucket}/{self._k(key)}: the "
                    "store refused the conditional write (If-None-Match: *) because the key "
                    "exists (raw data is immutable; load corrected data under a new source file)"
                ) from exc
        entry = ManifestEntry.now(
            key,
            data,
            rows=rows,
            source_file=source_file,
            source_sha256=source_sha256,
            version_id=version_id,
        )
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._k(MANIFEST_PREFIX + key + ".json"),
            Body=json.dumps(asdict(entry), sort_keys=True).encode(),
            IfNoneMatch="*",
        )
        return True

    def _unrecorded_first_version(self, key: str, digest: str) -> str:
        """The version id of ``key``'s only version when it holds exactly ``digest`` (a load
        that died between the object and its manifest record), else ``""``."""
        versions = [o for o in self.stored_objects(key) if o.key == key]
        if len(versions) != 1 or versions[0].is_delete_marker:
            return ""
        data = self.read_version(key, versions[0].version_id)
        return versions[0].version_id if sha256_bytes(data) == digest else ""

    def scan_manifest(self, prefix: str = "") -> ManifestScan:
        """Manifest records under ``prefix``: one LIST of the versions of ``_manifest/<prefix>``
        and a GET per record not fetched before, so reading a partition never reads the whole
        manifest.

        Each manifest object is trusted only in its first version, the one written with
        ``If-None-Match: *`` and locked: a later version is reported as ``rewritten`` and never
        redirects a read, and a delete marker is reported as ``deleted`` while the first
        version stays in use.
        """
        scan = ManifestScan()
        first: dict[str, str] = {}
        versions: dict[str, int] = {}
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(
            Bucket=self.bucket, Prefix=self._k(MANIFEST_PREFIX + prefix)
        ):
            # S3 lists the versions of a key newest first, so the last one seen is the first.
            for v in page.get("Versions", []):
                name = v["Key"][len(self.prefix) :]
                first[name] = str(v.get("VersionId", ""))
                versions[name] = versions.get(name, 0) + 1
            for marker in page.get("DeleteMarkers", []):
                scan.deleted.append(marker["Key"][len(self.prefix) :])
        scan.rewritten = sorted(name for name, n in versions.items() if n > 1)
        scan.deleted = sorted(set(scan.deleted))
        todo = [(n, v) for n, v in sorted(first.items()) if (n, v) not in self._records]

        def fetch(item: tuple[str, str]) -> bytes:
            name, version = item
            args = {"Bucket": self.bucket, "Key": self._k(name)}
            if version and version != "null":
                args["VersionId"] = version
            return bytes(self.client.get_object(**args)["Body"].read())

        # One small GET per record: run them concurrently, they wait on the network.
        with ThreadPoolExecutor(max_workers=8) as pool:
            for item, body in zip(todo, pool.map(fetch, todo), strict=True):
                self._records[item] = body
        for name, version in sorted(first.items()):
            try:
                entry = ManifestEntry.from_json(self._records[(name, version)])
            except ValueError as exc:
                scan.malformed.append((name, str(exc)))
                continue
            if MANIFEST_PREFIX + entry.key + ".json" != name:
                scan.malformed.append((name, f"records key {entry.key!r} under another name"))
                continue
            scan.records.append(entry)
        scan.records.sort(key=lambda e: (e.written_at, e.key))
        return scan

    def partitions(self, kind: str = "ticks") -> list[tuple[str, date]]:
        """Sessions holding ``kind`` objects, from the names of the manifest objects' versions
        alone (a delete marker hides none, as in :meth:`scan_manifest`): LIST requests only, no
        GET per record, so loading the code location stays cheap on a large bucket."""
        skip = len(self.prefix) + len(MANIFEST_PREFIX)
        names: list[str] = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(MANIFEST_PREFIX + kind)):
            names += [v["Key"][skip:].removesuffix(".json") for v in page.get("Versions", [])]
        return partitions_of(names)

    def read_version(self, key: str, version_id: str = "") -> bytes:
        args: dict[str, str] = {"Bucket": self.bucket, "Key": self._k(key)}
        if version_id:
            args["VersionId"] = version_id
        try:
            response = self.client.get_object(**args)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "NoSuchVersion", "404", "MethodNotAllowed", "405"):
                raise ObjectMissingError(
                    f"raw object s3://{self.bucket}/{self._k(key)} "
                    f"(version {version_id or 'latest'}) is missing"
                ) from exc
            raise
        if version_id and str(response.get("VersionId", "")) != version_id:
            raise ObjectMissingError(
                f"raw object s3://{self.bucket}/{self._k(key)}: asked for version {version_id}, "
                f"the store returned {response.get('VersionId')!r}"
            )
        return bytes(response["Body"].read())

    def stored_objects(self, prefix: str = "") -> list[StoredObject]:
        found = []
        paginator = self.client.get_paginator("list_object_versions")
        for sub in [prefix] if prefix else [kind + "/" for kind in KINDS]:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(sub)):
                for v in page.get("Versions", []):
                    found.append(
                        StoredObject(
                            key=v["Key"][len(self.prefix) :],
                            version_id=str(v.get("VersionId", "")),
                            size=int(v["Size"]),
                            is_latest=bool(v.get("IsLatest", False)),
                        )
                    )
                for m in page.get("DeleteMarkers", []):
                    found.append(
                        StoredObject(
                            key=m["Key"][len(self.prefix) :],
                            version_id=str(m.get("VersionId", "")),
                            size=0,
                            is_latest=bool(m.get("IsLatest", False)),
                            is_delete_marker=True,
                        )
                    )
        # Stable sort by key only: within a key, S3's order (newest first) is kept.
        return sorted(found, key=lambda o: o.key)
