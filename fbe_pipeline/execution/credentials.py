"""Where broker credentials may live: only in the execution code location's processes.

A broker credential is any environment variable named ``FBE_BROKER_*`` (e.g.
``FBE_BROKER_API_KEY``, ``FBE_BROKER_API_SECRET``). The execution gateway receives them through
Dagster ``EnvVar``s of its resource (``resources/broker.py``); every other process FBE starts
(ingest service and detector, Dagster daemon and UI, the detection code location and its run
workers, batch CLI commands) gets an environment without them, so a bug or a dependency in
detection cannot read or leak them.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

BROKER_ENV_PREFIX = "FBE_BROKER_"


def broker_credential_names(env: Mapping[str, str]) -> list[str]:
    """Names (never values) of the broker credentials present in ``env``, sorted."""
    return sorted(name for name in env if name.startswith(BROKER_ENV_PREFIX))


def without_broker_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` without any ``FBE_BROKER_*`` variable, for a detection process."""
    return {k: v for k, v in env.items() if not k.startswith(BROKER_ENV_PREFIX)}


def take_broker_credentials(env: MutableMapping[str, str]) -> dict[str, str]:
    """Remove every ``FBE_BROKER_*`` variable from ``env`` (e.g. ``os.environ``) and return
    them, so that the calling process keeps them only where it hands them on explicitly."""
    taken = {name: env[name] for name in broker_credential_names(env)}
    for name in taken:
        del env[name]
    return taken
