"""Photometry: per-image time on a full-size frame against the read floor and the
reference's per-source photutils loop; the exact aperture sums against sep and photutils;
scaling 1 -> 2 workers."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sep
from astropy.stats import SigmaClip
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry

from spxdask import PhotometryConfig
from spxdask.batch import run_extraction
from spxdask.photometry import measure_image
from spxdask.photometry.overlap import circle_weights
from spxdask.photometry.pixels import measure_pixels
from spxdask.simulate import SimConfig, make_catalog, plan_survey, simulate_sky, write_image
from spxdask.spherex import Flag, L2File

from . import Result, best_of, register
from .reference_photometry import reference_measure


def _read_floor(path: Path) -> None:
    """Just read what the kernel reads: open (headers), the four image HDUs, the PSF cube and
    the WCS-WAVE table."""
    with L2File(path) as l2:
        l2.image(), l2.flags(), l2.variance(), l2.zodi(), np.array(l2.psf.data, dtype="=f4")
        l2.wavelength(np.zeros(1), np.zeros(1))


def _per_image(tmp: Path) -> list[Result]:
    out = []
    cfg = SimConfig(n_images=1, size=2040, n_sources=20000, detectors=(2,), radius=1.5, seed=7)
    catalog = make_catalog(cfg)
    spec = plan_survey(cfg, catalog)[0]
    truth = write_image(spec, cfg, tmp)
    path = tmp / spec.relpath
    inside = catalog[catalog.targetid.isin(truth.targetid)][["targetid", "ra", "dec"]]
    floor = best_of(lambda: _read_floor(path), repeat=15)
    out.append(Result("photometry", "read floor (6 HDUs), 2040^2", floor))
    for n in (100, 2000, 20000):
        cat = inside.iloc[:n]
        base = best_of(lambda: reference_measure(str(path), cat), repeat=1)
        for method in ("annulus", "window"):
            config = PhotometryConfig(background_method=method)

            def run():
                with L2File(path) as l2:
                    return measure_image(l2, cat, config)
            t = best_of(run, repeat=15 if len(cat) <= 2000 else 3)
            extra = {"x read floor": round(t / floor, 2), "us/source": round(1e6 * t / len(cat), 1)}
            out.append(Result("photometry", f"{len(cat)} sources, {method} bg", t, "reference loop (window)", base, extra))
    return out + _background_library(path, inside.iloc[:2000])


def _background_library(path: Path, catalog: pd.DataFrame) -> list[Result]:
    """The compiled per-source pass (background and aperture cut-out) against photutils'
    ApertureStats for the background alone (annulus, same mask, same sigma clipping), on the
    full-size frame."""
    config = PhotometryConfig()
    clip = SigmaClip(sigma=config.bg_sigma_clip_sigma, maxiters=config.bg_sigma_clip_maxiters,
                     cenfunc="mean", stdfunc="std")
    with L2File(path) as l2:
        x, y = l2.wcs.all_world2pix(catalog.ra, catalog.dec, 0)
        raw = [l2.raw(n) for n in ("IMAGE", "ZODI", "VARIANCE", "FLAGS")]
        image = l2.image() - l2.zodi()
        mask = (l2.flags() & (config.bad_mask | Flag.SOURCE)) != 0
    r_in = 1.0 + config.annulus_inner_offset
    annulus = CircularAnnulus(np.column_stack([x, y]), r_in, np.sqrt(r_in**2 + config.min_annulus_area / np.pi))
    t_lib = best_of(lambda: ApertureStats(image, annulus, mask=mask, sigma_clip=clip).median)
    t_ours = best_of(lambda: measure_pixels(*raw, 1.0, x, y, 1.0, 1, config))
    return [Result("photometry", f"annulus bg + cut-outs, {len(x)} src", t_ours, "photutils ApertureStats", t_lib,
                   {"us/source": round(1e6 * t_ours / len(x), 2), "us/source photutils": round(1e6 * t_lib / len(x), 1)})]


def _aperture_library() -> list[Result]:
    """Exact aperture sums and their errors for 2,000 apertures on a 2040^2 frame: the overlap
    weights of :mod:`spxdask.photometry.overlap` (computed once per aperture, then summed over
    the data and the variance with numpy) against sep and photutils (``method="exact"``), which
    compute the overlaps again for each summed image."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2040, 2040))
    var = rng.uniform(0.5, 1.5, size=data.shape)
    err = np.sqrt(var)
    x, y = rng.uniform(10, 2030, 2000), rng.uniform(10, 2030, 2000)
    r, m = 1.06, 2
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    offsets = np.arange(-m, m + 1)
    rows, cols = (iy[:, None] + offsets)[:, :, None], (ix[:, None] + offsets)[:, None, :]

    def ours():
        w = circle_weights(x - ix, y - iy, r, m)
        return np.einsum("nab,nab->n", w, data[rows, cols]), np.sqrt(np.einsum("nab,nab->n", w, var[rows, cols]))
    aperture = CircularAperture(np.column_stack([x, y]), r)
    # the same sums: photutils' to rounding, sep's to its ~1e-7 overlap precision
    total, total_err = ours()
    exact = aperture_photometry(data, aperture, error=err, method="exact")
    np.testing.assert_allclose(total, exact["aperture_sum"].data, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(total_err, exact["aperture_sum_err"].data, rtol=1e-9)
    np.testing.assert_allclose(total, sep.sum_circle(data, x, y, r, var=var, subpix=0)[0], rtol=1e-6, atol=1e-6)
    t_ours = best_of(ours, repeat=15)
    t_sep = best_of(lambda: sep.sum_circle(data, x, y, r, var=var, subpix=0), repeat=15)
    t_ph = best_of(lambda: aperture_photometry(data, aperture, error=err, method="exact"))
    per = {"us/aperture spxdask": round(1e6 * t_ours / 2000, 2), "us/aperture sep": round(1e6 * t_sep / 2000, 2),
           "us/aperture photutils": round(1e6 * t_ph / 2000, 2)}
    return [Result("photometry", "exact aperture sums + errors, 2000 apertures", t_ours, "sep", t_sep, per),
            Result("photometry", "exact aperture sums + errors, 2000 apertures", t_ours, "photutils exact", t_ph, per)]


def _scaling(tmp: Path) -> list[Result]:
    """run_extraction over 100 images on a 1-worker, then a 2-worker LocalCluster: a warm-up
    run on each (it loads the compiled kernels in every worker), then the best of 5 runs."""
    from distributed import Client, LocalCluster

    cfg = SimConfig(n_images=100, size=1024, n_sources=16000, radius=1.0, seed=8)
    sky = simulate_sky(tmp / "sky", cfg)
    catalog = pd.read_csv(sky.catalog)
    times = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
            runs = []
            for k in range(6):  # the first run warms up
                t0 = time.perf_counter()
                n = run_extraction(sky.archive, catalog, PhotometryConfig(), tmp / f"out{workers}-{k}" / "per_image")
                runs.append(time.perf_counter() - t0)
                assert n == 100
            times[workers] = runs[1:]
    per_image = pd.read_parquet(tmp / "out2-1" / "manifest.parquet")["n_sources"].mean()
    return [Result("photometry", "100 images 1024^2, 2 workers", min(times[2]), "1 worker", min(times[1]),
                   {"sources per image": int(per_image), "runs (s), 1 worker": [round(t, 2) for t in times[1]],
                    "runs (s), 2 workers": [round(t, 2) for t in times[2]]})]


@register("photometry")
def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        return _per_image(Path(tmp)) + _aperture_library() + _scaling(Path(tmp))
