"""Sources as they are, on a full-size frame of 20,000 sources: the kernel with 30 % galaxies
(their profiles through the PSF, a second joint fit) against the same catalog as points, and
the kernel with the per-image astrometry and proper motions against the kernel without."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from spxdask import PhotometryConfig
from spxdask.photometry import measure_image
from spxdask.simulate import SimConfig, make_catalog, plan_survey, write_image
from spxdask.spherex import L2File

from . import Result, best_of, register


def _frame(tmp: Path) -> tuple[Path, pd.DataFrame]:
    """A 2040² QR2 frame of detector 2, 30 % of its sources galaxies and a third moving, and
    the catalog rows inside it (with their shapes and motions)."""
    cfg = SimConfig(n_images=1, size=2040, n_sources=20000, detectors=(2,), radius=1.5, seed=7, galaxy_fraction=0.3,
                    moving_fraction=0.3)
    catalog = make_catalog(cfg)
    spec = plan_survey(cfg, catalog)[0]
    truth = write_image(spec, cfg, tmp)
    return tmp / spec.relpath, catalog[catalog.targetid.isin(truth.targetid)].drop(columns="catalogued")


def _time(path: Path, catalog: pd.DataFrame, config: PhotometryConfig) -> float:
    def run():
        with L2File(path) as l2:
            return measure_image(l2, catalog, config)
    run()  # compiles the kernels, tabulates the profiles
    return best_of(run, repeat=3)


@register("sources")
def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        path, catalog = _frame(Path(tmp))
        n = len(catalog)
        plain = catalog[["targetid", "ra", "dec"]]
        bare = PhotometryConfig(astrometry="none")
        points = _time(path, plain, bare)
        shaped = _time(path, catalog.drop(columns=["pmra", "pmdec", "parallax", "ref_epoch"]), bare)
        moving = _time(path, catalog.drop(columns=["type", "shape_r", "shape_e1", "shape_e2", "sersic"]), bare)
        astrometry = _time(path, plain, PhotometryConfig())
        galaxies = int((catalog.type != "PSF").sum())
    return [
        Result("sources", f"kernel, {n} sources of which {galaxies} galaxies, 2040^2", shaped,
               "the same sources as points", points, {"x points (target <= 2)": round(shaped / points, 2)}),
        Result("sources", f"kernel, {n} sources with proper motions", moving, "without their motions", points,
               {"x without": round(moving / points, 3)}),
        Result("sources", f"kernel with the per-image astrometry, {n} sources", astrometry, "without it", points,
               {"x without": round(astrometry / points, 3)}),
    ]
