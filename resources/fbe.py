"""ConfigurableResources that hand the domain core its stores and configuration."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar

from fbe_pipeline.governance.config import ConfigStore
from fbe_pipeline.governance.runtime import config_store, split
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.settings import fbe_home
from fbe_pipeline.storage.store import LocalRawStore, RawStore
from fbe_pipeline.storage.store_s3 import S3RawStore, quiet_aws_loggers


class RawStoreResource(ConfigurableResource):  # type: ignore[type-arg]
    """The immutable raw store; ``backend`` selects the implementation.

    Attributes
    ----------
    home : str
        ``FBE_HOME``; the local backend keeps objects in ``$FBE_HOME/raw``.
    backend : str
        ``local`` (the default) or ``s3`` (AWS S3 or MinIO through dagster-aws's S3 resource).
    s3_bucket, s3_prefix : str
        Bucket and optional key prefix (s3 backend).
    s3_endpoint_url : str
        Endpoint, e.g. ``http://127.0.0.1:9000`` for MinIO; empty for AWS.
    s3_region : str
        Region name.

    Credentials are never configured here: the S3 client reads ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` (or a profile or role) from the environment.
    """

    home: str
    backend: str = "local"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"

    def s3_client(self) -> Any:
        """A boto3 S3 client from dagster-aws's ``S3Resource`` with this endpoint and region.

        botocore's loggers are held at WARNING first: at DEBUG they print request headers and
        credential lookups (access key id, session token) to stderr and the compute logs.
        """
        from dagster_aws.s3 import S3Resource

        quiet_aws_loggers()
        return S3Resource(
            endpoint_url=self.s3_endpoint_url or None, region_name=self.s3_region
        ).get_client()

    def get_store(self) -> RawStore:
        """Return the configured :class:`~fbe_pipeline.storage.store.RawStore`.

        Raises
        ------
        ValueError
            On an unknown backend, or the s3 backend without a bucket.
        """
        if self.backend == "local":
            return LocalRawStore(Path(self.home).expanduser().resolve() / "raw")
        if self.backend == "s3":
            if not self.s3_bucket:
                raise ValueError("the s3 raw store backend needs FBE_S3_BUCKET")
            return S3RawStore(self.s3_client(), self.s3_bucket, self.s3_prefix)
        raise ValueError(f"unknown raw store backend {self.backend!r}; expected 'local' or 's3'")


def env_or(name: str, default: str, deferred: bool = True) -> Any:
    """The setting ``name`` from the environment, else ``default``.

    With ``deferred`` a set variable is returned as ``EnvVar(name)``, which Dagster resolves
    at run time and shows by name (never by value) in the UI; without it, as its value, for
    code that uses the resource outside a Dagster run (the CLI).
    """
    value = os.environ.get(name)
    if not value:
        return default
    return EnvVar(name) if deferred else value


def raw_store_from_env(deferred: bool = True) -> RawStoreResource:
    """The raw store resource configured by ``FBE_HOME``, ``FBE_RAW_BACKEND``,
    ``FBE_S3_BUCKET``, ``FBE_S3_PREFIX``, ``FBE_S3_ENDPOINT_URL`` and ``FBE_S3_REGION``
    (see :func:`env_or` for ``deferred``)."""
    return RawStoreResource(
        home=str(fbe_home()),
        backend=env_or("FBE_RAW_BACKEND", "local", deferred),
        s3_bucket=env_or("FBE_S3_BUCKET", "", deferred),
        s3_prefix=env_or("FBE_S3_PREFIX", "", deferred),
        s3_endpoint_url=env_or("FBE_S3_ENDPOINT_URL", "", deferred),
        s3_region=env_or("FBE_S3_REGION", "us-east-1", deferred),
    )


def scoring_from_env() -> ScoringConfigResource:
    """The scoring config resource of ``FBE_HOME``: the active version of its versioned config,
    seeded with ``FBE_SCORING_CONFIG`` (JSON overrides) when set."""
    return ScoringConfigResource(
        config_json=env_or("FBE_SCORING_CONFIG", "{}"), home=str(fbe_home())
    )


@functools.lru_cache(maxsize=8)
def _config_store(home: str, seed: str) -> ConfigStore:
    # One store (engine, migrated once) per process: every asset of a run asks for the config.
    return config_store(Path(home), seed_scoring=seed)


class ScoringConfigResource(ConfigurableResource):  # type: ignore[type-arg]
    """The scoring configuration (SPEC §8).

    Attributes
    ----------
    config_json : str
        JSON overrides of the defaults: the first version's scoring settings when ``home`` is
        set, else the configuration itself.
    home : str
        ``FBE_HOME``: when set, the configuration is the version in effect in its operational
        store (issue 10), so runs pick up approved changes.
    """

    config_json: str = "{}"
    home: str = ""

    def get_config(self) -> ScoringConfig:
        """The configuration in effect; raises ``ValueError`` on unknown keys or bad values."""
        if not self.home:
            return ScoringConfig.from_dict(json.loads(self.config_json or "{}"))
        _, values = _config_store(self.home, self.config_json or "{}").active()
        return split(values)[0]
