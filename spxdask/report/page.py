"""The page: one self-contained HTML file (figures as PNG data, styles inline, nothing fetched).

Each figure's ``<figure>`` carries, in ``data-facts``, the numbers it shows (JSON), so a
reader or a test can check the picture against the run's files without reading pixels.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_path
from ..layout import RunLayout
from . import figures
from .facts import RunFacts, gather

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee;
text-align: left; vertical-align: top; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.note { color: #666; } code { font-size: 0.92em; }
"""
#: failures and unreadable files listed one by one at most
MAX_LISTED = 200


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(name: str, drawn: tuple[Any, dict[str, Any]], caption: str) -> str:
    fig, facts = drawn
    data = html.escape(json.dumps(facts, default=str), quote=True)
    return (f'<figure data-name="{name}" data-facts="{data}"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{_png(fig)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _table(rows: list[tuple[str, Any]], attribute: str = "") -> str:
    cells = []
    for key, value in rows:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        data = f' data-{attribute}="{html.escape(key)}"' if attribute else ""
        cells.append(f"<tr><th>{html.escape(key)}</th><td{' class=n' if numeric else ''}{data}>{html.escape(text)}"
                     "</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _frame(frame: pd.DataFrame, name: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table data-name="{name}"><tr>{head}</tr>{body}</table>'


def _failures(facts: RunFacts) -> str:
    manifest = facts.manifest
    bad = manifest[manifest["status"].isin(["failed", "unreadable"])] if len(manifest) else manifest
    if not len(bad):
        return '<p class="note">No image failed and every archive file could be read.</p>'
    shown = bad[["status", "image", "error"]].head(MAX_LISTED)
    more = f'<p class="note">{len(bad) - len(shown):,} more in <code>manifest.parquet</code>.</p>' \
        if len(bad) > len(shown) else ""
    reasons = bad["error"].fillna("").str.split(":").str[0].value_counts()
    return (_table([(str(k), int(v)) for k, v in reasons.items()], "reason") + _frame(shown, "failures") + more)


def render(facts: RunFacts, *, seconds: float = 0.0) -> str:
    """The page of a run's facts.

    Parameters
    ----------
    facts : RunFacts
        From :func:`~spxdask.report.facts.gather`.
    seconds : float
        The time the facts took to read (shown at the foot).

    Returns
    -------
    str
        The HTML page.
    """
    t0 = time.perf_counter()
    record = facts.record
    config = record.get("config", {})
    region = (f"RA {config.get('center_ra')}, Dec {config.get('center_dec')}, radius {config.get('radius')}°"
              if config else "not recorded (no run.yaml)")
    parts = [f"<h1>spxdask run: {html.escape(str(facts.root.name))}</h1>",
             f'<p class="note">{html.escape(region)}; written {html.escape(str(record.get("written", "?")))}</p>',
             "<h2>The run</h2>", _table(list(facts.counts.items()), "count"),
             "<h2>Sky coverage</h2>", _figure("sky", figures.sky(facts), "image footprints by detector, and the "
                                              "sources coloured by their number of measurements"),
             "<h2>Time coverage</h2>", _figure("time", figures.time_coverage(facts), "images per day, by detector"),
             "<h2>Failures and unreadable files</h2>", _failures(facts),
             "<h2>Photometry health</h2>",
             _figure("photometry", figures.photometry_health(facts),
                     f"a sample of {len(facts.photometry):,} measurements from {facts.files_sampled:,} images"),
             '<p class="note">No per-image astrometric offsets are recorded by this run.</p>',
             "<h2>Spectra and variability</h2>",
             _figure("variability", figures.variability(facts), "the most significant variable sources"),
             _frame(facts.variable.head(20), "variable") if len(facts.variable) else "",
             _figure("spectra", figures.spectra(facts), "the brightest sources' channel spectra"),
             "<h2>Performance</h2>", _figure("performance", figures.performance(facts), "time per stage and per image"),
             '<p class="note">Worker memory is in the Dask performance reports beside this page.</p>',
             "<h2>Configuration and versions</h2>",
             _table([(k, v) for k, v in config.items() if not isinstance(v, dict)]),
             _table(list((record.get("versions") or {}).items()))]
    foot = f'<p class="note">Read in {seconds:.2f} s, drawn in {time.perf_counter() - t0:.2f} s.</p>'
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>spxdask run '
            f'{html.escape(facts.root.name)}</title><style>{STYLE}</style></head><body>{"".join(parts)}{foot}'
            "</body></html>")


def write_report(run: str | Path, *, out: str | Path | None = None, sample_rows: int = 200_000) -> Path:
    """Write a run's report: one self-contained HTML page.

    Parameters
    ----------
    run : path
        The run folder.
    out : path, optional
        The page; default ``<run>/report.html``.
    sample_rows : int
        Measurements and sources sampled at most (about), whatever the run's size.

    Returns
    -------
    Path
        The page written.
    """
    t0 = time.perf_counter()
    facts = gather(run, sample_rows=sample_rows)
    page = render(facts, seconds=time.perf_counter() - t0)
    path = Path(out) if out is not None else RunLayout(Path(run)).report
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
