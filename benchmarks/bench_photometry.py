"""Photometry: per-image time on a full-size frame against the read floor and the
reference's per-source photutils loop; the aperture-sum library choice; scaling 1 -> 2 workers."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sep
from photutils.aperture import CircularAperture, aperture_photometry

from spxdask import PhotometryConfig
from spxdask.batch import run_extraction
from spxdask.photometry import measure_image
from spxdask.spherex import L2File
from spxdask.spherex.simulate import SimConfig, make_catalog, plan_survey, simulate_sky, write_image

from . import Result, best_of, register
from .reference_photometry import reference_measure


def _read_floor(path: Path) -> None:
    with L2File(path) as l2:
        l2.image(), l2.flags(), l2.variance(), l2.zodi(), l2.psf


def _per_image(tmp: Path) -> list[Result]:
    out = []
    cfg = SimConfig(n_images=1, size=2040, n_sources=20000, detectors=(2,), radius=1.5, seed=7)
    catalog = make_catalog(cfg)
    spec = plan_survey(cfg, catalog)[0]
    truth = write_image(spec, cfg, tmp)
    path = tmp / spec.relpath
    inside = catalog[catalog.targetid.isin(truth.targetid)][["targetid", "ra", "dec"]]
    floor = best_of(lambda: _read_floor(path))
    out.append(Result("photometry", "read floor (4 HDUs + PSF), 2040^2", floor))
    for n in (100, 2000, 20000):
        cat = inside.iloc[:n]
        base = best_of(lambda: reference_measure(str(path), cat), repeat=1)
        for method in ("annulus", "window"):
            config = PhotometryConfig(background_method=method)

            def run():
                with L2File(path) as l2:
                    return measure_image(l2, cat, config)
            t = best_of(run)
            extra = {"x read floor": round(t / floor, 2), "us/source": round(1e6 * t / len(cat), 1)}
            out.append(Result("photometry", f"{len(cat)} sources, {method} bg", t, "reference loop (window)", base, extra))
    return out


def _aperture_library() -> list[Result]:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2040, 2040))
    x, y = rng.uniform(10, 2030, 2000), rng.uniform(10, 2030, 2000)
    t_sep = best_of(lambda: sep.sum_circle(data, x, y, 1.06, subpix=0))
    t_ph = best_of(lambda: aperture_photometry(data, CircularAperture(np.column_stack([x, y]), 1.06), method="exact"))
    return [Result("photometry", "exact aperture sums, 2000 apertures", t_sep, "photutils exact", t_ph,
                   {"us/aperture sep": round(1e6 * t_sep / 2000, 2), "us/aperture photutils": round(1e6 * t_ph / 2000, 2)})]


def _scaling(tmp: Path) -> list[Result]:
    from distributed import Client, LocalCluster

    cfg = SimConfig(n_images=100, size=1024, n_sources=4000, radius=1.0, seed=8)
    sky = simulate_sky(tmp / "sky", cfg)
    catalog = pd.read_csv(sky.catalog)
    times = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
            run_extraction(sky.archive, catalog.iloc[:10], PhotometryConfig(), tmp / f"warm{workers}")
            t0 = time.perf_counter()
            n = run_extraction(sky.archive, catalog, PhotometryConfig(), tmp / f"out{workers}" / "per_image")
            times[workers] = time.perf_counter() - t0
        assert n == 100
    return [Result("photometry", "100 images 1024^2, 2 workers", times[2], "1 worker", times[1])]


@register("photometry")
def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        return _per_image(Path(tmp)) + _aperture_library() + _scaling(Path(tmp))
