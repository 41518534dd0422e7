"""Light curves: 10^7 rows from 1,000 per-image files through the Dask shuffle on a 2-worker
LocalCluster (2 GiB each), against the reference's 64-bucket CSV algorithm on the same rows;
single-source read latency from the store. Spectra: the spectra stage on that store beside
the aggregation that precedes it (same cluster, same run); single-source spectrum reads."""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from spxdask.batch import aggregate_lightcurves, read_lightcurve, read_spectrum
from spxdask.batch.extract import _write
from spxdask.photometry import COLUMNS
from spxdask.spectra import build_spectra
from spxdask.spherex import channels

from . import PeakMemory, Result, register

N_FILES, ROWS_PER_FILE, N_TARGETS = 1000, 10_000, 20_000
AGG = ["targetid", "obs_id", "band", "mjd", "x", "y", "flux", "flux_error", "mag_ab", "mag_ab_error",
       "wavelength", "bandwidth", "flag", "bg_level", "bg_error", "aperture_radius"]


def make_per_image(folder: Path, csv_folder: Path | None = None) -> np.ndarray:
    """N_FILES per-image files of ROWS_PER_FILE rows (and the reference's CSVs when
    ``csv_folder`` is given): random columns, each image one detector with wavelengths
    across its band and positive fluxes, so the spectra stage bins every row."""
    rng = np.random.default_rng(0)
    ids = 39627000000000000 + np.sort(rng.choice(10**9, N_TARGETS, replace=False))
    folder.mkdir(parents=True)
    for k in range(N_FILES):
        n = ROWS_PER_FILE
        det = channels.detector(k % 6 + 1)
        df = pd.DataFrame({c: rng.normal(size=n) for c in COLUMNS})
        df = df.assign(targetid=rng.choice(ids, n, replace=False), obs_id=f"2026W01_1A_{k:04d}_1", band=det.band,
                       filename=f"level2_{k}.fits", quality="", psf_quality="", pipeline_version="6.5.7", release="qr2",
                       flag=np.int32(0),
                       detector=np.int8(det.number), n_bad=np.int16(0), psf_n_neighbours=np.int32(0),
                       mjd=61000.0 + k / 10, wavelength=rng.uniform(det.em_min_um, det.em_max_um, n),
                       flux_total=rng.normal(100.0, 5.0, n), flux_total_error=np.full(n, 5.0),
                       flux_psf=rng.normal(100.0, 4.0, n), flux_psf_error=np.full(n, 4.0))
        _write(df[list(COLUMNS)], folder / f"img{k:04d}_D{det.number}.parquet", pa.int64())
        if csv_folder is not None:
            csv_folder.mkdir(parents=True, exist_ok=True)
            df.to_csv(csv_folder / f"img{k:04d}_photometry.csv", index=False)
    return ids


def reference_aggregate(csv_dir: Path, out: Path, num_buckets: int = 64) -> int:
    """The reference's two-phase bucket algorithm (behaviour reference §6), ids kept exact."""
    buckets = out / "buckets"
    lcs = out / "lightcurves"
    buckets.mkdir(parents=True)
    lcs.mkdir()
    written = set()
    for path in sorted(csv_dir.glob("*_photometry.csv")):
        df = pd.read_csv(path, usecols=AGG, dtype={"targetid": str, "obs_id": str, "band": str})
        bucket = df["targetid"].map(
            lambda t: int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") % num_buckets)
        for b, rows in df.groupby(bucket):
            target = buckets / f"bucket_{b:03d}.csv"
            rows.to_csv(target, mode="a", header=target not in written, index=False)
            written.add(target)
    n = 0
    for target in sorted(written):
        df = pd.read_csv(target, dtype={"targetid": str}).sort_values(["targetid", "mjd"], kind="mergesort")
        for tid, rows in df.groupby("targetid"):
            rows.drop(columns="targetid").to_csv(lcs / f"{tid}.csv", index=False)
            n += 1
    return n


@register("lightcurves")
def run() -> list[Result]:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = make_per_image(root / "per_image", root / "csv")
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB", dashboard_address=":0") as cluster, \
                Client(cluster) as client, PeakMemory(client) as mem:
            t0 = time.perf_counter()
            n = aggregate_lightcurves(root / "per_image", root / "lightcurves")
            t_dask = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_ref = reference_aggregate(root / "csv", root / "reference")
        t_ref = time.perf_counter() - t0
        assert n == n_ref == len(ids)
        lat = _latency(read_lightcurve, root, ids)
        peak = _gib(mem)
        return [Result("lightcurves", f"{N_FILES * ROWS_PER_FILE:.0e} rows, {N_FILES} files, 2 workers", t_dask,
                       "reference 64-bucket CSV", t_ref, {"peak worker memory": peak, "targets": n}),
                Result("lightcurves", "read one source from the store (median of 20)", float(np.median(lat)),
                       extra={"max ms": round(1e3 * max(lat), 1)})]


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


@register("spectra")
def run_spectra() -> list[Result]:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = make_per_image(root / "per_image")
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GiB", dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            with PeakMemory(client) as agg_mem:
                t0 = time.perf_counter()
                aggregate_lightcurves(root / "per_image", root / "lightcurves")
                t_agg = time.perf_counter() - t0
            with PeakMemory(client) as spec_mem:
                t0 = time.perf_counter()
                done = build_spectra(root, client=client)
                t_spec = time.perf_counter() - t0
        assert done["sources"] == len(ids) and not done["reused"]
        lat = _latency(read_spectrum, root, ids)
        return [Result("spectra", f"{N_FILES * ROWS_PER_FILE:.0e} rows, {len(ids)} sources, 2 workers", t_spec,
                       "aggregation of the same rows", t_agg,
                       {"spectrum rows": done["rows"], "peak worker memory, spectra": _gib(spec_mem),
                        "peak worker memory, aggregation": _gib(agg_mem)}),
                Result("spectra", "read one spectrum (median of 20)", float(np.median(lat)),
                       extra={"max ms": round(1e3 * max(lat), 1)})]
