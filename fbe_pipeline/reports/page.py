"""The HTML page of a trading review: key figures, tables and the PNG charts beside it.

The page is self-contained apart from its PNGs, which sit in a directory named after the page
(``2013-10-07.html`` next to ``2013-10-07/<chart>.png``) and are referenced by relative path,
so a review directory can be copied or served anywhere without network access.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

TEMPLATE = "review.html"

CHART_TITLES: dict[str, str] = {
    "equity_drawdown": "Cumulative PnL and drawdown (R)",
    "price_with_signals": "Price with signals and trades",
    "signals_by_time_of_day": "Signals by local time of day",
    "score_distribution": "Score distribution of breakout pokes",
    "regime_session_bars": "PnL by volatility regime and session period (R)",
}

# A table of the page: ``(heading, header row, rows)``, every cell already formatted.
Section = tuple[str, list[str], list[list[str]]]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A chart name becomes a file name inside the page's directory: one plain path component.
_CHART_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class _Chart:
    title: str
    src: str
    alt: str
    width: int
    height: int


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("fbe_pipeline.reports", "templates"),
        autoescape=select_autoescape(),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def chart_title(name: str) -> str:
    """Human title of a chart name: the known titles, else the name in words.

    Parameters
    ----------
    name : str
        Chart name, e.g. one of :data:`fbe_pipeline.reports.charts.CHARTS`.

    Returns
    -------
    str
        E.g. ``"Price with signals and trades"`` for ``"price_with_signals"``.
    """
    return CHART_TITLES.get(name, name.replace("_", " ").replace("-", " ").capitalize())


def _png_size(name: str, png: bytes) -> tuple[int, int]:
    if png[:8] != _PNG_SIGNATURE or len(png) < 24:
        raise ValueError(f"chart {name!r} is not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_page(
    title: str,
    subtitle: str,
    figures: list[tuple[str, str]],
    sections: Sequence[Section],
    charts: dict[str, bytes],
    out_html: Path,
) -> list[Path]:
    """Write a review page and its chart PNGs.

    Parameters
    ----------
    title : str
        Page heading and ``<title>``, e.g. ``"SPY daily review 2013-10-07"``.
    subtitle : str
        Line under the heading (may be empty), e.g. the config and data versions.
    figures : list of (str, str)
        Key figures as ``(label, formatted value)``, shown as a table at the top; values are
        shown as given (format units such as R or bps into them).
    sections : sequence of (str, list of str, list of list of str)
        Tables after the key figures, each ``(heading, header row, rows)``; every cell is an
        already formatted string. A section without rows shows "none".
    charts : dict of str to bytes
        PNG bytes by chart name (e.g. from :mod:`fbe_pipeline.reports.charts`), shown in this
        order, each under an ``<h2>`` with its :func:`chart_title`.
    out_html : pathlib.Path
        Page to write, e.g. ``reports/daily/SPY/2013-10-07.html``. The PNGs go to the sibling
        directory named after its stem (``reports/daily/SPY/2013-10-07/<name>.png``) and are
        referenced as ``2013-10-07/<name>.png``.

    Returns
    -------
    list of pathlib.Path
        The written files: ``out_html`` first, then the PNGs in ``charts`` order.

    Raises
    ------
    ValueError
        If ``title`` is empty or blank, a chart name is not a single plain file name (empty,
        starting with a dot, or holding a path separator or other character outside
        ``A-Z a-z 0-9 _ . -``), or a chart's bytes are not a PNG.
    OSError
        If a directory or file cannot be written. Files are written to a temporary name and
        renamed, so a reader never sees a partly written file.
    """
    if not title.strip():
        raise ValueError("the page title is empty")
    sizes: dict[str, tuple[int, int]] = {}
    for name, png in charts.items():
        if not _CHART_NAME.fullmatch(name):
            raise ValueError(f"chart name {name!r} is not a plain file name")
        sizes[name] = _png_size(name, png)

    out_html = Path(out_html)
    chart_dir = out_html.parent / out_html.stem
    items = [
        _Chart(
            title=chart_title(name),
            src=f"{quote(out_html.stem)}/{quote(name)}.png",
            alt=f"Chart: {chart_title(name)}",
            width=sizes[name][0],
            height=sizes[name][1],
        )
        for name in charts
    ]
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=title,
            subtitle=subtitle,
            figures=figures,
            sections=[
                {"heading": heading, "header": header, "rows": rows}
                for heading, header, rows in sections
            ],
            charts=items,
        )
    )

    out_html.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if charts:
        chart_dir.mkdir(parents=True, exist_ok=True)
    # The PNGs first: once the page is in place every image it references exists.
    for name, png in charts.items():
        path = chart_dir / f"{name}.png"
        _write_atomic(path, png)
        written.append(path)
    _write_atomic(out_html, html.encode("utf-8"))
    return [out_html, *written]
