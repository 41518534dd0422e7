"""Light curves: 10^7 rows from 1,000 per-image files (each a 3.5 deg image of a 10 deg field of
100,000 sources) into the run's HATS catalog on a 2-worker LocalCluster (2 GiB each), against
the targetid store it replaced (a P2P shuffle, :mod:`.reference_store`) on the same rows; the
catalog with its spectra; appending 1 % more images; one-source reads; an LSDB cone search; the
partition plan against hats' alignment."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from spxdask.batch import read_lightcurve, read_spectrum
from spxdask.catalog import build_catalog
from spxdask.catalog.build import PARTITION_ROWS
from spxdask.catalog.plan import HIGHEST_ORDER, align
from spxdask.catalog.versions import HISTOGRAMS, current_version
from spxdask.per_image import write as write_per_image
from spxdask.photometry import COLUMNS
from spxdask.spectra import SpectraConfig
from spxdask.spherex import channels

from . import PeakMemory, Result, register
from .reference_store import targetid_store

N_FILES, ROWS_PER_FILE, N_TARGETS = 1000, 10_000, 100_000
FIELD_DEG, IMAGE_DEG = 10.0, 3.5
AGG = ["targetid", "obs_id", "band", "mjd", "x", "y", "flux", "flux_error", "mag_ab", "mag_ab_error",
       "wavelength", "bandwidth", "flag", "bg_level", "bg_error", "aperture_radius"]


def make_per_image(folder: Path, files: range = range(N_FILES), corner: bool = False) -> None:
    """Per-image files of ROWS_PER_FILE rows: each image a random 3.5 deg box of the field (with
    ``corner``, of its 4.5 deg corner), its rows the sources inside it,
    random columns, wavelengths across its detector's band and positive fluxes, so the spectra
    bin every row."""
    rng = np.random.default_rng(0)
    ids = 39627000000000000 + np.sort(rng.choice(10**9, N_TARGETS, replace=False))
    ra, dec = 150 + rng.uniform(0, FIELD_DEG, N_TARGETS), rng.uniform(0, FIELD_DEG, N_TARGETS)
    folder.mkdir(parents=True, exist_ok=True)
    for k in files:
        n = ROWS_PER_FILE
        det = channels.detector(k % 6 + 1)
        pick = np.random.default_rng(k)
        x0, y0 = pick.uniform(0, 1.0 if corner else FIELD_DEG - IMAGE_DEG, 2)
        inside = np.flatnonzero((ra >= 150 + x0) & (ra < 150 + x0 + IMAGE_DEG) & (dec >= y0) & (dec < y0 + IMAGE_DEG))
        rows = pick.choice(inside, n, replace=False)
        df = pd.DataFrame({c: pick.normal(size=n) for c in COLUMNS})
        df = df.assign(targetid=ids[rows], ra=ra[rows], dec=dec[rows], obs_id=f"2026W01_1A_{k:04d}_1", band=det.band,
                       filename=f"level2_{k}.fits", quality="", psf_quality="", model="PSF", pipeline_version="6.5.7",
                       release="qr2",
                       flag=np.int32(0),
                       detector=np.int8(det.number), n_bad=np.int16(0), psf_n_neighbours=np.int32(0),
                       mjd=61000.0 + k / 10, wavelength=pick.uniform(det.em_min_um, det.em_max_um, n),
                       flux_total=pick.normal(100.0, 5.0, n), flux_total_error=np.full(n, 5.0),
                       flux_psf=pick.normal(100.0, 4.0, n), flux_psf_error=np.full(n, 4.0))
        write_per_image(df[list(COLUMNS)], folder / f"img{k:04d}_D{det.number}.parquet", pa.int64())


@register("lightcurves")
def run() -> list[Result]:
    import lsdb
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_per_image(root / "per_image")
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB", dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            with PeakMemory(client) as store_mem:
                t0 = time.perf_counter()
                n_store = targetid_store(root / "per_image", root / "store", client)
                t_store = time.perf_counter() - t0
            with PeakMemory(client) as cat_mem:
                t0 = time.perf_counter()
                made = build_catalog(root / "per_image", root / "lc" / "catalog", client=client)
                t_cat = time.perf_counter() - t0
            with PeakMemory(client) as spec_mem:
                t0 = time.perf_counter()
                full = build_catalog(root / "per_image", root / "run" / "catalog", spectra=SpectraConfig(), client=client)
                t_spec = time.perf_counter() - t0
            new = N_FILES // 100
            make_per_image(root / "per_image", files=range(N_FILES, N_FILES + new))
            t0 = time.perf_counter()
            grown = build_catalog(root / "per_image", root / "run" / "catalog", spectra=SpectraConfig(), client=client)
            t_append = time.perf_counter() - t0
            make_per_image(root / "per_image", files=range(N_FILES + new, N_FILES + 2 * new), corner=True)
            t0 = time.perf_counter()
            cornered = build_catalog(root / "per_image", root / "run" / "catalog", spectra=SpectraConfig(),
                                     client=client)
            t_corner = time.perf_counter() - t0
        print(f"store {t_store:.1f} s, catalog {t_cat:.1f} s, with spectra {t_spec:.1f} s, append {t_append:.1f} s "
              f"({grown.rewritten} of {grown.partitions} rewritten)", file=sys.stderr, flush=True)
        assert made.sources == n_store == full.sources and made.rows == N_FILES * ROWS_PER_FILE
        measured = pd.read_parquet(root / "per_image", columns=["targetid"]).targetid.unique()
        lat = _latency(read_lightcurve, root / "run", measured)
        lat_spec = _latency(read_spectrum, root / "run", measured)
        catalog = lsdb.open_catalog(root / "run" / "catalog", columns=["targetid", "ra", "dec", "n_obs"])
        t0 = time.perf_counter()
        cone = catalog.cone_search(155.0, 5.0, 0.1 * 3600).compute()
        t_cone = time.perf_counter() - t0
        t_plan, t_hats = _plans(root / "run" / "catalog")
        rows = f"{N_FILES * ROWS_PER_FILE:.0e} rows, {N_FILES} files, 2 workers x 2 GiB"
        return [Result("lightcurves", f"catalog (light curves), {rows}", t_cat, "targetid store (P2P shuffle)", t_store,
                       {"peak worker memory": _gib(cat_mem), "store peak": _gib(store_mem),
                        "partitions": made.partitions}),
                Result("lightcurves", f"catalog with spectra and summaries, {rows}", t_spec,
                       "targetid store (light curves only)", t_store,
                       {"peak worker memory": _gib(spec_mem), "spectrum rows": full.spectrum_rows}),
                Result("lightcurves", f"append 1 % more images ({new}) anywhere in the field", t_append,
                       "full build with spectra", t_spec,
                       {"partitions rewritten": f"{grown.rewritten} of {grown.partitions}"}),
                Result("lightcurves", f"append 1 % more images ({new}) in one corner of the field", t_corner,
                       "full build with spectra", t_spec,
                       {"partitions rewritten": f"{cornered.rewritten} of {cornered.partitions}"}),
                Result("lightcurves", "read one source's light curve from the catalog (median of 20)",
                       float(np.median(lat)), extra={"max ms": round(1e3 * max(lat), 1)}),
                Result("lightcurves", "read one source's spectrum from the catalog (median of 20)",
                       float(np.median(lat_spec)), extra={"max ms": round(1e3 * max(lat_spec), 1)}),
                Result("lightcurves", "LSDB cone search of 0.1 deg (open + compute)", t_cone,
                       extra={"sources found": len(cone)}),
                Result("lightcurves", "partition plan of those rows at order 10 (nonzero pixels only)", t_plan,
                       "hats generate_alignment (every pixel of the sky)", t_hats)]


def _plans(catalog: Path) -> tuple[float, float]:
    """Seconds to align the catalog's fine-pixel counts: spxdask's plan vs hats' alignment (same
    destinations, tests/test_catalog.py)."""
    from hats.pixel_math.partition_stats import generate_alignment

    hist = pd.read_parquet(current_version(catalog) / HISTOGRAMS).groupby("pixel")["count"].sum()
    pixels, counts = hist.index.to_numpy(), hist.to_numpy()
    t0 = time.perf_counter()
    align(pixels, counts, PARTITION_ROWS, HIGHEST_ORDER)
    t_plan = time.perf_counter() - t0
    total = np.zeros(12 * 4**HIGHEST_ORDER, np.int64)
    total[pixels] = counts
    t0 = time.perf_counter()
    generate_alignment(total, highest_order=HIGHEST_ORDER, threshold=PARTITION_ROWS)
    return t_plan, time.perf_counter() - t0


def _gib(mem: PeakMemory) -> dict:
    return {k: f"{v / 2**30:.2f} GiB" for k, v in mem.peak.items()}


def _latency(read, root: Path, ids: np.ndarray) -> list[float]:
    """Seconds to read one target, for 20 random ids."""
    times = []
    for tid in np.random.default_rng(1).choice(ids, 20):
        t0 = time.perf_counter()
        rows = read(root, int(tid))
        times.append(time.perf_counter() - t0)
        assert len(rows) > 0
    return times
