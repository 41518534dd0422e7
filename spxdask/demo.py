"""``spxdask demo``: the whole batch pipeline on a small simulated sky, on a local cluster."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .batch import BatchConfig, BatchPipeline, read_lightcurve, read_spectrum
from .batch.plot import plot_lightcurve, plot_spectrum
from .cluster import get_client
from .drizzle3d import Drizzle3DConfig, drizzle
from .drizzle3d.plot import plot_cube_slice
from .simulate import SimConfig, simulate_sky

CENTER = (150.1, 2.2)


def run_demo(out: str | Path = "spxdask_demo", n_images: int = 36, n_sources: int = 400, seed: int = 1) -> dict:
    """Simulate the demo sky under ``out/sky``, run the batch pipeline into ``out/batch``,
    write plots of the best-measured source, and drizzle a D2 cube of the field centre into
    ``out/drizzle`` with a PNG of one plane; returns what was written."""
    out = Path(out)
    t0 = time.perf_counter()
    client = get_client(scheduler="local")
    try:
        print(f"Dask dashboard: {client.dashboard_link}")
        sky = simulate_sky(out / "sky", SimConfig(n_images=n_images, size=256, n_sources=n_sources, seed=seed,
                                                  center=CENTER, radius=0.5))
        print(f"simulated {len(sky.files)} L2 files (256x256 px, D1-D6) and {n_sources} sources "
              f"in {time.perf_counter() - t0:.1f} s")
        config = BatchConfig(center_ra=CENTER[0], center_dec=CENTER[1], radius=0.6, catalog_path=sky.catalog,
                             archive=str(sky.archive), output_dir=out / "batch", export_csv=True)
        summary = BatchPipeline(config, client=client).run_all()
        print(summary.table())
        counts = pd.read_parquet(config.per_image_dir, columns=["targetid", "flux_total", "flux_total_error"])
        snr = (counts.flux_total / counts.flux_total_error).groupby(counts.targetid).median()
        best = counts.targetid.value_counts()[snr[snr > 20].index].idxmax()
        rows = read_lightcurve(config.output_dir, best)
        written = {"lightcurve_png": plot_lightcurve(rows, out / f"lightcurve_{best}.png"),
                   "spectrum_png": plot_spectrum(rows, out / f"spectrum_{best}.png",
                                                 spectrum=read_spectrum(config.output_dir, best))}
        cube = drizzle(Drizzle3DConfig(center_ra=CENTER[0], center_dec=CENTER[1], width=12, height=12, detector=2,
                                       archive=str(sky.archive), output_dir=out / "drizzle", overwrite=True),
                       client=client)
        written["cube_fits"] = cube[2]
        written["cube_slice_png"] = plot_cube_slice(cube[2], out / "cube_slice_D2.png")
        for name, path in written.items():
            print(f"{name}: {path}")
        print(f"demo finished in {time.perf_counter() - t0:.1f} s")
        return written
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
