"""What the report shows, read from a run's own outputs: summaries and samples, never all rows.

Every read is bounded whatever the run's size: one row per source or per image at most
(``sources.parquet``, ``manifest.parquet``, ``query.parquet``), capped samples of the per-image
files and of the sources, the catalog's skymap, and a handful of sources' light curves and
spectra through the catalog's id index. No Dask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .. import per_image
from ..catalog.read import read_lightcurves, read_spectra
from ..catalog.versions import PARTITIONS, current_version
from ..layout import RunLayout
from ..manifest import read_manifest
from ..record import read_run_record

#: columns of the per-image files the photometry-health figures read
PHOTOMETRY_COLUMNS = ["flux_psf", "flux_psf_error", "flux_total", "flux_total_error", "psf_chi2", "quality",
                      "psf_quality"]


@dataclass
class RunFacts:
    """What a run holds, in the amounts a page can show.

    Parameters
    ----------
    root : Path
        The run folder.
    record : dict
        ``run.yaml`` (empty when the run wrote none).
    counts : dict
        Images found, unreadable, measured, failed; sources, rows, spectrum rows, variable.
    query : DataFrame
        One row per image found (obs_id, detector, mjd, footprint); empty without a query.
    manifest : DataFrame
        One row per image: status, error, seconds; empty without one.
    sources : DataFrame
        A sample of ``sources.parquet`` (ra, dec, n_obs, median_snr, variable, ...).
    n_sources : int
        Sources in the run (all of them, not the sample).
    photometry : DataFrame
        A sample of the per-image rows (:data:`PHOTOMETRY_COLUMNS`).
    files_sampled : int
        Per-image files the sample was read from.
    variable : DataFrame
        The sources flagged variable (all, one row each).
    lightcurves : DataFrame
        The light-curve rows of the variable sources shown.
    spectra : DataFrame
        The channel spectra of the brightest sources shown.
    """

    root: Path
    record: dict[str, Any]
    counts: dict[str, int]
    query: pd.DataFrame
    manifest: pd.DataFrame
    sources: pd.DataFrame
    n_sources: int
    photometry: pd.DataFrame
    files_sampled: int
    variable: pd.DataFrame
    lightcurves: pd.DataFrame = field(default_factory=pd.DataFrame)
    spectra: pd.DataFrame = field(default_factory=pd.DataFrame)


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(path, columns=columns) if path.exists() else pd.DataFrame(columns=columns or [])


def _sample_rows(path: Path, columns: list[str], limit: int) -> tuple[pd.DataFrame, int]:
    """At most about ``limit`` rows of a Parquet file, from row groups spread over it; its row count."""
    if not path.exists():
        return pd.DataFrame(columns=columns), 0
    source = pq.ParquetFile(path)
    total = source.metadata.num_rows
    if total <= limit:
        return source.read(columns=columns).to_pandas(), total
    per_group = max(1, total // max(source.num_row_groups, 1))
    k = max(1, min(source.num_row_groups, limit // per_group))
    groups = np.unique(np.linspace(0, source.num_row_groups - 1, k).round().astype(int)).tolist()
    return source.read_row_groups(groups, columns=columns).to_pandas(), total


def _photometry_sample(folder: Path, limit: int) -> tuple[pd.DataFrame, int]:
    """Rows of per-image files spread over the run (by name), until about ``limit`` rows."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame(columns=PHOTOMETRY_COLUMNS), 0
    frames, n, used = [], 0, 0
    step = max(1, len(files) // 200)
    for path in files[::step]:
        frame = per_image.read(path, columns=PHOTOMETRY_COLUMNS).to_pandas()
        frames.append(frame)
        used += 1
        n += len(frame)
        if n >= limit:
            break
    return pd.concat(frames, ignore_index=True), used


def _rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows if path.exists() else 0


def counts(run: str | Path) -> dict[str, int]:
    """What a run holds, counted from its files (footers, the manifest, the catalog's records).

    Parameters
    ----------
    run : path
        The run folder.

    Returns
    -------
    dict
        Images found, unreadable, measured, failed; sources measured; light-curve and
        channel-spectrum rows; variable sources.
    """
    layout = RunLayout(Path(run))
    manifest = read_manifest(layout.manifest, columns=["status"])
    status = manifest["status"].value_counts() if len(manifest) else pd.Series(dtype=int)
    out = {"images found": _rows(layout.query), "unreadable": int(status.get("unreadable", 0)),
           "images measured": int(status.get("ok", 0)), "failures": int(status.get("failed", 0)),
           "sources": _rows(layout.sources), "rows": 0, "spectrum rows": 0, "variable": 0}
    version = current_version(layout.catalog)
    if version is not None and (version / PARTITIONS).exists():
        parts = pd.read_parquet(version / PARTITIONS)
        out |= {"rows": int(parts["n_rows"].sum()), "spectrum rows": int(parts["n_spectrum_rows"].sum()),
                "variable": int(parts["n_variable"].sum())}
    return out


def gather(run: str | Path, *, sample_rows: int = 200_000, shown: int = 4) -> RunFacts:
    """Read what the report shows from a run folder.

    Parameters
    ----------
    run : path
        The run folder.
    sample_rows : int
        Per-image rows and sources sampled at most (about).
    shown : int
        Variable sources whose light curves, and bright sources whose spectra, are drawn.

    Returns
    -------
    RunFacts
    """
    layout = RunLayout(Path(run))
    query = _read(layout.query, ["obs_id", "detector", "mjd", "footprint"])
    manifest = read_manifest(layout.manifest, columns=["image", "obs_id", "detector", "status", "error", "seconds"])
    sources, n_sources = _sample_rows(layout.sources, ["targetid", "ra", "dec", "n_obs", "median_snr", "chi2_dof",
                                                       "p_value", "variable"], sample_rows)
    photometry, used = _photometry_sample(layout.per_image, sample_rows)
    columns = ["targetid", "ra", "dec", "n_obs", "chi2_dof", "p_value", "variable"]
    variable = (pd.read_parquet(layout.sources, columns=columns, filters=[("variable", "==", True)])
                if layout.sources.exists() else pd.DataFrame(columns=columns))
    facts = RunFacts(layout.root, read_run_record(layout.run_record), counts(layout.root), query, manifest, sources,
                     n_sources, photometry, used, variable.sort_values("p_value", kind="stable").reset_index(drop=True))
    if current_version(layout.catalog) is not None:
        if len(facts.variable):
            facts.lightcurves = read_lightcurves(layout.catalog, facts.variable["targetid"].head(shown).tolist())
        if len(sources) and "median_snr" in sources:
            bright = sources.nlargest(shown, "median_snr")["targetid"].tolist()
            facts.spectra = read_spectra(layout.catalog, bright)
    return facts
