"""The file model: per-pixel wavelength (numpy bilinear vs astropy/wcslib WAVE-TAB), reading
the four image HDUs of a full-size file, and simulating a full-size image."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from spxdask.simulate import SimConfig, make_catalog, plan_survey, write_image
from spxdask.spherex import L2File

from . import Result, best_of, register


@register("spherex")
def run() -> list[Result]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SimConfig(n_images=1, size=2040, n_sources=2000, detectors=(3,), radius=1.0)
        spec = plan_survey(cfg, make_catalog(cfg))[0]
        t0 = time.perf_counter()
        write_image(spec, cfg, Path(tmp))
        sim = time.perf_counter() - t0
        out.append(Result("spherex", "simulate one 2040^2 image, 2000 sources", sim))
        with L2File(Path(tmp) / spec.relpath) as f:
            rng = np.random.default_rng(0)
            x, y = rng.uniform(0, 2039, 10**6), rng.uniform(0, 2039, 10**6)
            w = f.spectral_wcs()
            fast = best_of(lambda: f.wavelength(x, y))
            ref = best_of(lambda: w.pixel_to_world(x, y), repeat=1)
            out.append(Result("spherex", "wavelength+bandwidth at 1e6 positions", fast, "astropy WCS key='W'", ref))
            yy, xx = np.mgrid[0:2040, 0:2040]
            fast = best_of(f.wavelength_map)
            ref = best_of(lambda: w.pixel_to_world(xx, yy), repeat=1)
            out.append(Result("spherex", "wavelength+bandwidth map, 2040^2", fast, "astropy WCS key='W'", ref))
            read = best_of(lambda: [f.image(), f.flags(), f.variance(), f.zodi()])
            out.append(Result("spherex", "read IMAGE+FLAGS+VARIANCE+ZODI", read))
    return out
