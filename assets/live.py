"""The live session of one instrument as Dagster sees it: an external asset that the live
service reports to, one runless observation per closed bar (issue 8)."""

from dagster import AssetSpec

from assets.common import OWNERS, Lane


def build_live_session(lane: Lane) -> AssetSpec:
    """The ``live_session`` asset of one instrument: observed by ``fbe serve``/``fbe live``
    once per closed bar of today's partition (bars, last bar close, signals so far); nothing
    in the pipeline reads it, so reports never trigger runs."""
    return AssetSpec(
        key=lane.key("live_session"),
        group_name=lane.symbol,
        partitions_def=lane.partitions_def,
        description=(
            f"The live detector's view of each {lane.symbol} session: one observation per "
            "closed bar with the bar count, the last bar's close and the signals so far."
        ),
        kinds={"python"},
        owners=OWNERS,
        tags={"layer": "live"},
    )
