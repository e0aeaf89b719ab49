"""Settings of the live ingest service, read once from the environment at start-up.

Owns :class:`IngestSettings` (paths under ``$FBE_HOME``, the webhook passphrase, the HMAC key of
``/v1/ticks``, the source-IP allowlist and the body limit). Imported by :mod:`.app`,
:mod:`.landing` and the CLI.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fbe_pipeline.settings import fbe_home

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TOLERANCE_S = 300

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A required secret is missing or a setting is malformed."""


@dataclass(frozen=True)
class IngestSettings:
    """Configuration of the ingest service.

    Attributes
    ----------
    home : Path
        ``$FBE_HOME``, absolute; the landing log lives in ``home / "landing"``.
    webhook_passphrase : str
        Shared secret expected in the ``passphrase`` field of TradingView alerts
        (``FBE_WEBHOOK_PASSPHRASE``).
    hmac_key : bytes
        Key of the ``FBE-Signature`` HMAC-SHA256 on ``/v1/ticks`` (``FBE_INGEST_HMAC_KEY``).
    allow_ips : tuple of ipaddress networks
        Source addresses allowed on the webhook (``FBE_WEBHOOK_ALLOW_IPS``, comma-separated
        addresses or CIDR networks); empty means any address.
    max_body_bytes : int
        Largest accepted request body, bytes (``FBE_INGEST_MAX_BODY_BYTES``, default 1 MiB).
    tolerance_s : int
        Allowed distance, seconds, between a signature's ``t`` and the server clock.
    grace_ms : int
        Event-time grace for late ticks before a minute closes, ms (``FBE_LIVE_GRACE_MS``,
        default 2,000).
    seal_interval_s : float
        Seconds between sealing passes into the raw store (``FBE_LIVE_SEAL_INTERVAL_S``,
        default 900: the batch re-runs a live session when its raw objects change).
    scoring_json : str
        JSON overrides of the scoring config, as the batch pipeline reads them
        (``FBE_SCORING_CONFIG``).
    """

    home: Path
    webhook_passphrase: str = field(repr=False)
    hmac_key: bytes = field(repr=False)
    allow_ips: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    tolerance_s: int = DEFAULT_TOLERANCE_S
    grace_ms: int = 2_000
    seal_interval_s: float = 900.0
    scoring_json: str = "{}"

    def __post_init__(self) -> None:
        if self.grace_ms < 0 or self.seal_interval_s <= 0:
            raise SettingsError("FBE_LIVE_GRACE_MS must be >= 0 and FBE_LIVE_SEAL_INTERVAL_S > 0")
        if not self.webhook_passphrase:
            raise SettingsError("FBE_WEBHOOK_PASSPHRASE is not set: the webhook needs a secret")
        if not self.hmac_key:
            raise SettingsError("FBE_INGEST_HMAC_KEY is not set: /v1/ticks needs a signing key")
        if self.max_body_bytes <= 0:
            raise SettingsError(f"max_body_bytes must be > 0, got {self.max_body_bytes}")

    @property
    def landing_dir(self) -> Path:
        """Root of the landing log, ``$FBE_HOME/landing``."""
        return self.home / "landing"

    @property
    def idempotency_db(self) -> Path:
        """SQLite database of idempotency keys and dead letters."""
        return self.landing_dir / "idempotency.sqlite"

    def ip_allowed(self, host: str | None) -> bool:
        """Return whether ``host`` (a client address) may call the webhook."""
        if not self.allow_ips:
            return True
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.allow_ips)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        """Build the settings from environment variables (read once, at start-up).

        Parameters
        ----------
        env : Mapping, optional
            Defaults to ``os.environ``.

        Raises
        ------
        SettingsError
            If ``FBE_WEBHOOK_PASSPHRASE`` or ``FBE_INGEST_HMAC_KEY`` is unset or empty, or an
            allowlist entry or the body limit is malformed.
        """
        env = os.environ if env is None else env
        missing = [k for k in ("FBE_WEBHOOK_PASSPHRASE", "FBE_INGEST_HMAC_KEY") if not env.get(k)]
        if missing:
            raise SettingsError(f"{' and '.join(missing)} must be set to start the ingest service")
        networks: list[IPNetwork] = []
        for item in env.get("FBE_WEBHOOK_ALLOW_IPS", "").split(","):
            if item.strip():
                try:
                    networks.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError as exc:
                    raise SettingsError(f"FBE_WEBHOOK_ALLOW_IPS: bad entry {item!r}") from exc
        try:
            max_body = int(env.get("FBE_INGEST_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
            grace_ms = int(env.get("FBE_LIVE_GRACE_MS", 2_000))
            seal_interval = float(env.get("FBE_LIVE_SEAL_INTERVAL_S", 900.0))
        except ValueError as exc:
            raise SettingsError(
                "FBE_INGEST_MAX_BODY_BYTES and FBE_LIVE_GRACE_MS must be integers, "
                "FBE_LIVE_SEAL_INTERVAL_S a number"
            ) from exc
        home = Path(env["FBE_HOME"]).expanduser().resolve() if env.get("FBE_HOME") else fbe_home()
        return cls(
            home=home,
            webhook_passphrase=env["FBE_WEBHOOK_PASSPHRASE"],
            hmac_key=env["FBE_INGEST_HMAC_KEY"].encode(),
            allow_ips=tuple(networks),
            max_body_bytes=max_body,
            grace_ms=grace_ms,
            seal_interval_s=seal_interval,
            scoring_json=env.get("FBE_SCORING_CONFIG") or "{}",
        )
