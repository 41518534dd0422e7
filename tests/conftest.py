"""Shared simulated skies (small images, written once per test session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import iqr

from spxdask.catalog.nested import LIGHTCURVE, SORT_KEYS, flatten, keys
from spxdask.catalog.versions import current_version, partition_files
from spxdask.drizzle3d import Drizzle3DConfig, build_output_wcs
from spxdask.geometry import grid_corners
from spxdask.simulate import SimConfig, simulate_sky

SMALL_QR2 = SimConfig(n_images=12, size=256, n_sources=200, seed=3, radius=0.4)
SMALL_QR3 = SimConfig(n_images=6, size=256, n_sources=200, seed=3, radius=0.4, layout="qr3")


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """A cache of this session's own (archive indexes live in the user's cache, named by the
    archive's path): a path an earlier session used must not find that session's index."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def sky_qr2(tmp_path_factory):
    return simulate_sky(tmp_path_factory.mktemp("sky_qr2"), SMALL_QR2, scheduler="sync")


@pytest.fixture(scope="session")
def sky_qr3(tmp_path_factory):
    return simulate_sky(tmp_path_factory.mktemp("sky_qr3"), SMALL_QR3, scheduler="sync")


def drizzle_box(ra: float, dec: float, width_deg: float, height_deg: float) -> tuple:
    """The polygon a Drizzle3D query sends for a box (its output grid's outer corners)."""
    cfg = Drizzle3DConfig(ra, dec, width_deg * 60, height_deg * 60)
    return tuple(map(tuple, grid_corners(build_output_wcs(cfg), (cfg.output_ny(), cfg.output_nx()))))


def lightcurve_rows(run: str | Path) -> pd.DataFrame:
    """Every light-curve row of a run's catalog, flat, sorted by targetid, mjd, wavelength."""
    version = current_version(Path(run) / "catalog")
    assert version is not None, f"no catalog in {run}"
    frames = [flatten(pq.read_table(p, columns=[*keys(LIGHTCURVE), LIGHTCURVE]), LIGHTCURVE)
              for p in partition_files(version)]
    return pd.concat(frames, ignore_index=True).sort_values(SORT_KEYS, kind="stable", ignore_index=True)


def flux_and_pulls(rows: pd.DataFrame, column: str) -> tuple[float, float]:
    """Median ``column`` / ``flux_true`` and the robust σ (the normal-scaled interquartile
    range) of the pulls against ``flux_true`` with the errors of ``<column>_error``."""
    pull = (rows[column] - rows.flux_true) / rows[f"{column}_error"]
    return float(np.median(rows[column] / rows.flux_true)), float(iqr(pull, scale="normal"))
