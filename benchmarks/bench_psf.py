"""Forced PSF photometry on a full-size frame: the per-image kernel with the joint PSF fit
against the aperture-only kernel, against photutils' ``PSFPhotometry`` (fixed positions, the
same pixel-integrated PSF, sources grouped when their fit boxes overlap), and the peak memory
of a process measuring 20,000 sources."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table
from photutils.psf import ImagePSF, PSFPhotometry, SourceGrouper
from scipy.ndimage import uniform_filter

from spxdask import PhotometryConfig
from spxdask.photometry import measure_image
from spxdask.simulate import SimConfig, make_catalog, plan_survey, write_image
from spxdask.spherex import L2File

from . import Result, best_of, register

#: photutils is timed on this many sources and scaled to the catalog.
PHOTUTILS_SUBSET = 200


def _frame(tmp: Path) -> tuple[Path, pd.DataFrame]:
    """A 2040² QR2 frame of detector 2 and the catalog rows inside it."""
    cfg = SimConfig(n_images=1, size=2040, n_sources=20000, detectors=(2,), radius=1.5, seed=7)
    catalog = make_catalog(cfg)
    spec = plan_survey(cfg, catalog)[0]
    truth = write_image(spec, cfg, tmp)
    return tmp / spec.relpath, catalog[catalog.targetid.isin(truth.targetid)][["targetid", "ra", "dec"]]


def _kernel(path: Path, catalog: pd.DataFrame) -> list[Result]:
    """The kernel with and without the PSF fit (best of several runs, interleaved)."""
    out = []
    for n in (2000, 20000):
        cat = catalog.iloc[:n]
        times = {}
        for fit in (False, True):
            config = PhotometryConfig(psf_fit=fit)

            def run(config=config, cat=cat):
                with L2File(path) as l2:
                    return measure_image(l2, cat, config)
            run()  # compiles the kernels
            times[fit] = best_of(run, repeat=20 if n <= 2000 else 8)
        extra = {"x aperture-only (target <= 2)": round(times[True] / times[False], 2),
                 "us/source": round(1e6 * times[True] / n, 1)}
        out.append(Result("psf", f"kernel with PSF fit, {n} sources, 2040^2", times[True],
                          "aperture-only kernel", times[False], extra))
    return out


def _photutils(path: Path, catalog: pd.DataFrame, kernel: Result) -> Result:
    """photutils ``PSFPhotometry`` with the frame's own PSF integrated over pixels (the central
    zone's 10x oversampled plane convolved with the 10x10 pixel box: an ePSF), fixed
    positions, a 7x7 fit box and grouping at the 7 px the spxdask fit couples sources, on a
    subset of the 2,000 sources of the kernel case, scaled to 2,000. spxdask's time is that
    case's kernel with the PSF fit minus the aperture-only kernel."""
    n_all = 2000
    config = PhotometryConfig()
    cat = catalog.iloc[:n_all]
    with L2File(path) as l2:
        x, y = l2.wcs.all_world2pix(cat.ra, cat.dec, 0)
        psf = l2.psf
        zone = int(psf.zone(np.array([1019.5]), np.array([1019.5]))[0])
        plane = np.asarray(psf.data[zone], float)
        epsf = uniform_filter(plane, size=psf.oversamp, mode="constant") * psf.oversamp**2
        image = l2.image() - l2.zodi()
        error = np.sqrt(l2.variance())
        mask = ((l2.flags() & config.bad_mask) != 0) | ~np.isfinite(image) | ~np.isfinite(error)
    model = ImagePSF(epsf / epsf.sum() * psf.oversamp**2, oversampling=psf.oversamp)
    model.x_0.fixed = model.y_0.fixed = True
    phot = PSFPhotometry(model, (7, 7), grouper=SourceGrouper(min_separation=7), aperture_radius=2)
    sub = slice(0, PHOTUTILS_SUBSET)
    init = Table({"x": x[sub], "y": y[sub], "flux": np.full(PHOTUTILS_SUBSET, 10.0)})
    t_sub = best_of(lambda: phot(np.where(mask, 0, image), error=np.where(mask, 1, error), mask=mask,
                                 init_params=init), repeat=1)
    t_lib = t_sub * n_all / PHOTUTILS_SUBSET

    t_fit = kernel.seconds - kernel.baseline_seconds
    return Result("psf", f"PSF fit of {n_all} sources (kernel minus aperture-only)", t_fit,
                  f"photutils PSFPhotometry ({PHOTUTILS_SUBSET} sources, scaled)", t_lib,
                  {"target": ">= 100x", "us/source spxdask": round(1e6 * t_fit / n_all, 1),
                   "us/source photutils": round(1e6 * t_lib / n_all, 1)})


_MEMORY = """
import json, resource, sys
import pandas as pd
from spxdask.photometry import measure_image
from spxdask.spherex import L2File
catalog = pd.read_parquet(sys.argv[2])
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
with L2File(sys.argv[1]) as l2:
    measure_image(l2, catalog.iloc[:10])  # loads the compiled kernels
    before = resident()
    rows = measure_image(l2, catalog)
print(json.dumps({"rows": len(rows), "before": before,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _memory(path: Path, catalog: pd.DataFrame, tmp: Path) -> Result:
    """Peak resident memory of a fresh process measuring the frame's 20,000 sources (Python,
    numpy, astropy and the compiled kernels included)."""
    cat_path = tmp / "catalog.parquet"
    catalog.to_parquet(cat_path)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEMORY, str(path), str(cat_path)], capture_output=True, text=True,
                          check=True)
    seconds = time.perf_counter() - t0
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return Result("psf", f"one image task, {got['rows']} sources: process peak memory", seconds,
                  extra={"peak RSS (GiB, target < 1)": round(got["peak"] / 2**30, 3),
                         "RSS before measuring (GiB)": round(got["before"] / 2**30, 3)})


@register("psf")
def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        path, catalog = _frame(Path(tmp))
        kernel = _kernel(path, catalog)
        return kernel + [_photutils(path, catalog, kernel[0]), _memory(path, catalog, Path(tmp))]
