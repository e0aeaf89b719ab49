"""ConfigurableResources that hand the domain core its stores and configuration."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource

from fbe_pipeline.config import ScoringConfig
from fbe_pipeline.settings import fbe_home
from fbe_pipeline.store import LocalRawStore, RawStore


def environment() -> str:
    """Which environment this process runs in: ``ci``, ``production`` or ``local``."""
    if os.environ.get("FBE_ENV"):
        return os.environ["FBE_ENV"]
    return "ci" if os.environ.get("CI") else "local"


class FbeSettings(ConfigurableResource):  # type: ignore[type-arg]
    """Where local state lives (``FBE_HOME``)."""

    home: str

    @property
    def home_path(self) -> Path:
        """``home`` as an absolute path."""
        return Path(self.home).expanduser().resolve()


class RawStoreResource(ConfigurableResource):  # type: ignore[type-arg]
    """The immutable raw store; ``backend`` selects the implementation (``local``).

    Attributes
    ----------
    home : str
        ``FBE_HOME``; the local backend keeps objects in ``$FBE_HOME/raw``.
    backend : str
        ``local`` (the default).
    """

    home: str
    backend: str = "local"

    def get_store(self) -> RawStore:
        """Return the configured :class:`~fbe_pipeline.store.RawStore`.

        Raises
        ------
        ValueError
            On an unknown backend.
        """
        if self.backend == "local":
            return LocalRawStore(Path(self.home).expanduser().resolve() / "raw")
        raise ValueError(f"unknown raw store backend {self.backend!r}; expected 'local'")


class ScoringConfigResource(ConfigurableResource):  # type: ignore[type-arg]
    """The scoring configuration; ``config_json`` overrides defaults (SPEC §8)."""

    config_json: str = "{}"

    def get_config(self) -> ScoringConfig:
        """Parse ``config_json`` over the defaults; raises ``ValueError`` on unknown keys."""
        import json

        return ScoringConfig.from_dict(json.loads(self.config_json or "{}"))


def default_home() -> str:
    """``FBE_HOME`` resolved now (used when no ``EnvVar`` is set)."""
    return str(fbe_home())
