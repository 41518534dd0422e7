"""The run's report at size: 10^7 light-curve rows from 1,000 per-image files (the light-curve
benchmark's run: 100,000 sources, catalog with spectra, ``sources.parquet``), written by
:func:`spxdask.report.write_report` from summaries and samples, against reading every
per-image row, which a report drawn from all rows would need first (same run)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from spxdask.catalog import build_catalog
from spxdask.catalog.export import write_sources
from spxdask.report import write_report
from spxdask.report.facts import PHOTOMETRY_COLUMNS
from spxdask.spectra import SpectraConfig

from . import Result, register
from .bench_lightcurves import N_FILES, ROWS_PER_FILE, make_per_image


@register("report")
def run() -> list[Result]:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        make_per_image(root / "per_image")
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB", dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            made = build_catalog(root / "per_image", root / "catalog", spectra=SpectraConfig(), client=client)
        write_sources(root / "catalog", root / "sources.parquet")
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            page = write_report(root)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rows = pd.read_parquet(root / "per_image", columns=PHOTOMETRY_COLUMNS)
        t_all = time.perf_counter() - t0
        assert len(rows) == made.rows == N_FILES * ROWS_PER_FILE
        return [Result("report", f"report.html of {made.rows:.0e} rows, {made.sources:,} sources (best of 3)",
                       min(times), "reading every per-image row (the columns it plots)", t_all,
                       {"page MB": round(page.stat().st_size / 1e6, 2), "runs s": [round(t, 2) for t in times]})]
