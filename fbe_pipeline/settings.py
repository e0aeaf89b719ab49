"""Where FBE keeps its local state: one git-ignored home directory (``FBE_HOME``).

``$FBE_HOME`` (default ``./var``) holds the raw store (``raw/``), the pipeline's tables
(``warehouse/``, per-session Parquet files queried with DuckDB), the Dagster instance
(``dagster/``, used as ``DAGSTER_HOME``) and the user's instrument registrations
(``instruments.yaml``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Most consecutive sessions of one instrument per pipeline run (`fbe materialize`, and a UI
# backfill through the assets' backfill policy): the run overhead is paid once per batch, while
# a batch's inputs (a session of ticks is up to ~0.5 M rows) stay well inside memory.
SESSIONS_PER_RUN = 10


@dataclass(frozen=True)
class Paths:
    """Resolved locations of FBE's local state.

    Attributes
    ----------
    home : Path
        ``$FBE_HOME``, absolute.
    """

    home: Path

    @property
    def raw(self) -> Path:
        """Root of the local raw store."""
        return self.home / "raw"

    @property
    def warehouse(self) -> Path:
        """The local warehouse: the pipeline's tables as per-session Parquet files."""
        return self.home / "warehouse"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance directory (``DAGSTER_HOME``)."""
        return self.home / "dagster"

    @property
    def instruments(self) -> Path:
        """Instruments registered by ``fbe load --calendar`` on this machine."""
        return self.home / "instruments.yaml"


def fbe_home() -> Path:
    """Return ``$FBE_HOME`` as an absolute path (default ``./var``)."""
    return Path(os.environ.get("FBE_HOME", "var")).expanduser().resolve()


def paths() -> Paths:
    """Return the :class:`Paths` for the current ``FBE_HOME``."""
    return Paths(fbe_home())


def sample_data_dir() -> Path:
    """Return the real sample data directory (``FBE_SAMPLE_DATA``, default ``../shared/data``)."""
    default = REPO_ROOT.parent / "shared" / "data"
    return Path(os.environ.get("FBE_SAMPLE_DATA", str(default))).expanduser().resolve()


def prepare_dagster_home() -> Path:
    """Create the Dagster instance directory with the repository's ``dagster.yaml``, or with
    the instance file named by ``FBE_DAGSTER_YAML`` (a path, relative to the repository root
    unless absolute; e.g. ``dagster.postgres.yaml`` for PostgreSQL storage).

    Sets ``DAGSTER_HOME`` in this process's environment so that Dagster code started from here
    (``materialize``, ``dagster dev``) uses the same instance. Returns the directory.

    Raises
    ------
    FileNotFoundError
        If ``FBE_DAGSTER_YAML`` names a file that does not exist.
    """
    home = paths().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    chosen = os.environ.get("FBE_DAGSTER_YAML")
    template = REPO_ROOT / (chosen or "dagster.yaml")
    if chosen and not template.is_file():
        raise FileNotFoundError(f"FBE_DAGSTER_YAML={chosen}: no such instance file ({template})")
    target = home / "dagster.yaml"
    if template.exists() and (not target.exists() or target.read_bytes() != template.read_bytes()):
        shutil.copyfile(template, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
