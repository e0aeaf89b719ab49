"""``raw_integrity``: the raw store verified against its manifest, as asset checks."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetCheckSpec, AssetExecutionContext, Output, asset, define_asset_job
from dagster_pandera import pandera_schema_to_dagster_type

from assets.common import check_result, table_asset
from fbe_pipeline.quality import schemas
from fbe_pipeline.quality.checks import CheckOutcome
from fbe_pipeline.storage.integrity import IntegrityReport, verify_store
from resources.fbe import RawStoreResource

_CHECKS = {
    "manifest_objects_present": ("missing",),
    "manifest_checksums_match": ("size_mismatch", "sha_mismatch"),
    "single_version_per_object": ("extra_versions", "delete_marker"),
    "no_unmanifested_objects": ("unmanifested",),
    "manifest_well_formed": ("malformed_manifest", "duplicate_entry", "manifest_rewritten"),
}
_DESCRIPTIONS = {
    "manifest_objects_present": "Every manifest entry's object version exists.",
    "manifest_checksums_match": "Every object has the size and SHA-256 its entry records.",
    "single_version_per_object": "No object has a second version or a delete marker.",
    "no_unmanifested_objects": "Every stored data object has a manifest entry.",
    "manifest_well_formed": "Every manifest record parses, no key is recorded twice, and no "
    "manifest object was rewritten (S3: only its first version is trusted).",
}


def report_frame(report: IntegrityReport, checked_at: pd.Timestamp) -> pd.DataFrame:
    """One row per finding: ``checked_at`` (UTC), ``problem``, ``key``."""
    rows = report.findings()
    return pd.DataFrame(
        {
            "checked_at": pd.DatetimeIndex([checked_at] * len(rows), tz="UTC"),
            "problem": [p for p, _ in rows],
            "key": [k for _, k in rows],
        }
    )


@asset(
    dagster_type=pandera_schema_to_dagster_type(schemas.RAW_INTEGRITY),
    **table_asset(schemas.RAW_INTEGRITY, "integrity"),
    check_specs=[
        AssetCheckSpec(name, asset="raw_integrity", description=_DESCRIPTIONS[name])
        for name in _CHECKS
    ],
    group_name="integrity",
)
def raw_integrity(context: AssetExecutionContext, raw_store: RawStoreResource) -> Iterator[object]:
    """Findings of verifying every manifest entry against the stored objects (existence, size,
    SHA-256), objects with more than one version or a delete marker, objects missing from the
    manifest, and damaged, duplicated or rewritten manifest records."""
    report = verify_store(raw_store.get_store())
    frame = report_frame(report, pd.Timestamp.now(tz="UTC"))
    yield Output(
        frame,
        metadata={
            "checked": report.checked,
            "findings": len(frame),
            "seconds": round(report.seconds, 3),
            "backend": raw_store.backend,
        },
    )
    for name, problems in _CHECKS.items():
        keys = sorted(k for p in problems for k in getattr(report, p))
        outcome = CheckOutcome(
            passed=not keys,
            metadata={"checked": report.checked, "offending": len(keys), "objects": keys[:50]},
        )
        yield check_result(name, outcome)


integrity_job = define_asset_job("raw_integrity_job", selection=[raw_integrity])
