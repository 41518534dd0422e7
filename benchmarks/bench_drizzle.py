"""Drizzle3D: per-frame time of a full-size frame into 30' and 120' cubes against the
reference algorithm; 1 vs 2 workers; peak worker memory for 50 frames with and without the
tree reduction."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import dask

from spxdask.drizzle3d import Drizzle3DConfig
from spxdask.drizzle3d.pipeline import output_grid
from spxdask.drizzle3d.reduce import image_partial, tree_partials
from spxdask.simulate import SimConfig, simulate_sky
from spxdask.spherex import L2File

from . import PeakMemory, Result, best_of, register
from .reference_drizzle import reference_drizzle_frame


def _per_frame(tmp: Path) -> list[Result]:
    sky = simulate_sky(tmp / "full", SimConfig(n_images=1, size=2040, n_sources=500, detectors=(3,), radius=1.5, seed=4),
                       scheduler="sync")
    path = str(sky.files[0])
    with L2File(path) as l2:
        ra, dec = (float(v) for v in l2.wcs.all_pix2world(1019.5, 1019.5, 0))
    out = []
    for size in (30, 120):
        cfg = Drizzle3DConfig(ra, dec, size, size, detector=3)
        grid = output_grid(cfg, 3)
        t = best_of(lambda: image_partial(path, grid, cfg), repeat=2)
        base = best_of(lambda: reference_drizzle_frame(path, grid.wcs, grid.shape, grid.zgrid.edges), repeat=1)
        out.append(Result("drizzle", f"one 2040^2 frame into a {size}' cube", t, "reference algorithm", base))
    return out


def _cluster_runs(tmp: Path) -> list[Result]:
    from distributed import Client, LocalCluster

    sky = simulate_sky(tmp / "many", SimConfig(n_images=50, size=512, n_sources=300, detectors=(2,), radius=0.4, seed=6))
    paths = [str(p) for p in sky.files]
    cfg = Drizzle3DConfig(150.1, 2.2, 40, 40, detector=2)
    grid = output_grid(cfg, 2)
    times, out = {}, []
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
            t0 = time.perf_counter()
            dask.compute(tree_partials(paths, grid, cfg))
            times[workers] = time.perf_counter() - t0
    for label, split in (("tree (split_every=8)", 8), ("no tree (one sum of 50)", 64)):
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster) as client, PeakMemory(client) as mem:
            t0 = time.perf_counter()
            dask.compute(tree_partials(paths, grid, Drizzle3DConfig(150.1, 2.2, 40, 40, detector=2, split_every=split)))
            t = time.perf_counter() - t0
        peak = {k: f"{v / 2**30:.2f} GiB" for k, v in mem.peak.items()}
        out.append(Result("drizzle", f"50 frames, {label}", t, extra={"peak worker memory": peak}))
    return [Result("drizzle", "50 frames 512^2 into 40', 2 workers", times[2], "1 worker", times[1])] + out


@register("drizzle")
def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        return _per_frame(Path(tmp)) + _cluster_runs(Path(tmp))
