"""The execution code location ``fbe_execution``: the ``paper_orders`` job, the
``paper_execution`` sensor and the broker with its credentials (SPEC §5, issue 9).

It is a code location of its own, apart from detection (``fbe_pipeline.definitions``), so that
the processes of detection never hold a broker credential: ``fbe live`` starts each location's
code server with its own environment, and Dagster's run launcher starts a run's worker from the
code server of its location, with that server's environment.
"""

from __future__ import annotations

from dagster import Definitions, definitions, in_process_executor

from resources.broker import broker_from_env
from resources.fbe import raw_store_from_env
from sensors.paper import paper_execution, paper_orders_job

LOCATION_NAME = "fbe_execution"


def build_execution_definitions() -> Definitions:
    """The paper job and sensor with their resources: the raw store (``FBE_HOME``,
    ``FBE_RAW_BACKEND`` and the S3 settings) for fills on real trades, and the broker
    (``FBE_BROKER``, ``FBE_BROKER_API_KEY``, ``FBE_BROKER_API_SECRET`` as ``EnvVar``s)."""
    return Definitions(
        jobs=[paper_orders_job],
        sensors=[paper_execution],
        executor=in_process_executor,
        resources={"raw_store": raw_store_from_env(), "broker": broker_from_env()},
    )


@definitions
def defs() -> Definitions:
    """The execution location's definitions, built when Dagster loads them."""
    return build_execution_definitions()
