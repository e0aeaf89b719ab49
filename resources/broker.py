"""The broker the execution gateway trades through, with its credentials from ``EnvVar``s.

Only the execution code location (``fbe_pipeline/execution_definitions.py``) has this resource;
the detection location has no broker and its processes no credential (see
:mod:`fbe_pipeline.execution.credentials`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import ConfigurableResource, EnvVar

from fbe_pipeline.execution.broker import Broker, PaperBroker
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.research.config import ScoringConfig

BROKERS = ("paper",)


class BrokerResource(ConfigurableResource):  # type: ignore[type-arg]
    """The execution venue.

    Attributes
    ----------
    broker : str
        ``paper`` (the default, SPEC §5 ``paper_mode: true``): simulated fills on real trades.
    api_key, api_secret : str
        The venue's credentials (``FBE_BROKER_API_KEY``, ``FBE_BROKER_API_SECRET``), resolved by
        Dagster at run time and shown by name only; the paper broker needs none.
    """

    broker: str = "paper"
    api_key: str = ""
    api_secret: str = ""

    def credential_names(self) -> list[str]:
        """Environment names of the credentials this resource holds (never their values)."""
        names = {"api_key": "FBE_BROKER_API_KEY", "api_secret": "FBE_BROKER_API_SECRET"}
        return [names[field] for field in ("api_key", "api_secret") if getattr(self, field)]

    def get_broker(self, scoring: ScoringConfig, instruments: Mapping[str, Instrument]) -> Broker:
        """The configured broker.

        Raises
        ------
        ValueError
            On a broker name that FBE has no connector for.
        """
        if self.broker == "paper":
            return PaperBroker(scoring, instruments)
        raise ValueError(f"unknown broker {self.broker!r}; FBE supports {', '.join(BROKERS)}")


def broker_from_env() -> BrokerResource:
    """The broker resource: ``FBE_BROKER`` (default ``paper``) and the credentials as
    ``EnvVar``s when they are set in this (the execution location's) environment."""
    names = {"api_key": "FBE_BROKER_API_KEY", "api_secret": "FBE_BROKER_API_SECRET"}
    secret = {field: EnvVar(name) for field, name in names.items() if os.environ.get(name)}
    return BrokerResource(broker=os.environ.get("FBE_BROKER") or "paper", **secret)
