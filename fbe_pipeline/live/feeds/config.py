"""The feeds ``fbe live`` runs: ``$FBE_HOME/feeds.yaml`` (or ``fbe live --feeds PATH``).

.. code-block:: yaml

    feeds:
      - venue: binance              # binance or alpaca
        symbols: [BTCUSDT, ETHUSDT]
        name: binance-spot          # optional, default the venue; names it in `fbe feeds`
        ws_url: wss://stream.binance.com:9443   # optional base URLs (tests: a local venue)
        rest_url: https://api.binance.com
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fbe_pipeline.live.feeds.runner import VENUES


class FeedConfig(BaseModel):
    """One feed of ``feeds.yaml`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    venue: str
    symbols: list[str] = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    ws_url: str | None = None
    rest_url: str | None = None

    @field_validator("venue")
    @classmethod
    def _venue(cls, value: str) -> str:
        if value not in VENUES:
            raise ValueError(f"unknown venue {value!r}; FBE has feeds for {', '.join(VENUES)}")
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        return [s.upper() for s in value]

    @property
    def feed_name(self) -> str:
        """``name``, or the venue."""
        return self.name or self.venue


class FeedsFile(BaseModel):
    """The whole file: ``feeds``, a list of :class:`FeedConfig` with distinct names."""

    model_config = ConfigDict(extra="forbid")

    feeds: list[FeedConfig] = Field(default_factory=list)


def load_feed_configs(path: Path) -> list[FeedConfig]:
    """The feeds of ``path`` (none when the file does not exist).

    Raises
    ------
    ValueError
        On malformed YAML, an unknown venue or key, no symbols, or two feeds of one name; the
        message names the file and the offending entry.
    """
    if not path.exists():
        return []
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        feeds = FeedsFile.model_validate(doc).feeds
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{path}: {problems}") from None
    names = [f.feed_name for f in feeds]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{path}: feeds named {twice} more than once; give each a `name`")
    return feeds
