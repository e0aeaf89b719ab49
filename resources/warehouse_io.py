"""Warehouse I/O manager: each asset's frames as per-partition Parquet files.

Each instrument's assets are keyed ``[<symbol>, <table>]`` and partitioned by its sessions
(:mod:`assets.partitions`); a materialization of a partition range writes one file per session
of the range to ``<table>/<SYMBOL>/<YYYY-MM-DD>.parquet`` (replacing each whole, atomically), and
an input reads the files of the upstream partitions it maps to (its look-back window). Runs of
different instruments write different files, so they run in parallel with no store lock.
Unpartitioned assets (``raw_integrity``) replace their single file. See
:mod:`fbe_pipeline.storage.tables` for the layout and the contracts that type every file.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

from fbe_pipeline.settings import Paths, fbe_home
from fbe_pipeline.storage.tables import Warehouse
from fbe_pipeline.storage.warehouse import build_warehouse
from resources.fbe import env_or


def _scope(context: InputContext | OutputContext) -> tuple[str | None, list[date] | None]:
    """The symbol and session dates a context covers (None, None when unpartitioned)."""
    if not context.has_asset_partitions:
        return None, None
    days = [date.fromisoformat(k) for k in context.asset_partition_keys]
    return context.asset_key.path[0], days


class FbeWarehouseIOManager(ConfigurableIOManager):
    """Stores each asset's frames in the warehouse (a
    :class:`~fbe_pipeline.storage.tables.Warehouse`).

    Attributes
    ----------
    home : str
        ``FBE_HOME``; the local backend keeps the files in ``$FBE_HOME/warehouse``.
    root : str
        The local backend's directory instead of ``$FBE_HOME/warehouse`` (e.g. a second
        warehouse to compare with); empty for the default.
    backend : str
        ``local`` or ``s3``.
    s3_bucket, s3_prefix, s3_endpoint_url, s3_region : str
        The s3 backend's bucket, key prefix (``warehouse/`` is appended), endpoint (empty for
        AWS) and region.
    """

    home: str = ""
    root: str = ""
    backend: str = "local"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"

    def warehouse(self) -> Warehouse:
        """The configured warehouse.

        Raises
        ------
        ValueError
            As :func:`fbe_pipeline.storage.warehouse.build_warehouse`.
        """
        root = Path(self.root) if self.root else Paths(Path(self.home or fbe_home())).warehouse
        return build_warehouse(
            self.backend,
            root,
            self.s3_bucket,
            self.s3_prefix,
            self.s3_endpoint_url,
            self.s3_region,
        )

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        """Replace the files of the partitions being written (the table's file when
        unpartitioned)."""
        symbol, days = _scope(context)
        self.warehouse().write(context.asset_key.path[-1], obj, symbol, days)
        context.add_output_metadata({"dagster/row_count": len(obj)})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        """The rows of the upstream partitions this input maps to (its look-back window),
        typed by the table's contract (timestamps in UTC); only the columns listed in the
        input's ``columns`` metadata when it has one."""
        symbol, days = _scope(context)
        columns = (context.definition_metadata or {}).get("columns")
        return self.warehouse().read(context.asset_key.path[-1], symbol, days, columns=columns)


def warehouse_io_from_env(deferred: bool = True) -> FbeWarehouseIOManager:
    """The I/O manager configured by ``FBE_HOME``, ``FBE_WAREHOUSE_BACKEND``,
    ``FBE_WAREHOUSE_BUCKET`` (default ``FBE_S3_BUCKET``), ``FBE_S3_PREFIX``,
    ``FBE_S3_ENDPOINT_URL`` and ``FBE_S3_REGION`` (see :func:`resources.fbe.env_or` for
    ``deferred``)."""
    bucket = "FBE_WAREHOUSE_BUCKET" if os.environ.get("FBE_WAREHOUSE_BUCKET") else "FBE_S3_BUCKET"
    return FbeWarehouseIOManager(
        home=str(fbe_home()),
        backend=env_or("FBE_WAREHOUSE_BACKEND", "local", deferred),
        s3_bucket=env_or(bucket, "", deferred),
        s3_prefix=env_or("FBE_S3_PREFIX", "", deferred),
        s3_endpoint_url=env_or("FBE_S3_ENDPOINT_URL", "", deferred),
        s3_region=env_or("FBE_S3_REGION", "us-east-1", deferred),
    )
