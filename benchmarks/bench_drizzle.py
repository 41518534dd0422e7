"""Drizzle3D: per-frame time of a full-size frame into 30' and 120' cubes against the
reference algorithm; 50 frames on 1 and 2 workers, time and peak worker memory, against the
code before per-plane partial cubes; spectra taken from a 120' cube against photutils
apertures plane by plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.wcs import WCS
from photutils.aperture import CircularAperture, aperture_photometry

from spxdask.drizzle3d import Drizzle3DConfig, DrizzleCube, extract_spectrum
from spxdask.drizzle3d.grid import output_grid
from spxdask.drizzle3d.io import as_loaded, load_cube, save_cube
from spxdask.drizzle3d.reduce import image_partial
from spxdask.simulate import SimConfig, simulate_sky
from spxdask.spherex import L2File

from . import Result, best_of, register
from .reference_drizzle import reference_drizzle_frame


def _cube_spectra(path: str, cfg: Drizzle3DConfig) -> list[Result]:
    """extract_spectrum on a 120' cube of one full-size frame, for 1 and 1,000 sources (one
    call with their positions; the point-source division, which re-reads the frame, and
    without it), against
    photutils' exact apertures on every plane (values only: no background, no correlated
    errors)."""
    grid = output_grid(cfg, 3)
    saved = save_cube(DrizzleCube.from_partial(image_partial(path, grid, cfg), grid, cfg),
                      Path(path).with_name("bench-cube.fits"), overwrite=True)
    made = load_cube(saved)  # as users have it: from its file (with its INPUTS)
    cube = as_loaded(made)
    covered = np.argwhere(cube["count"].max(axis=0) > 0)
    rng = np.random.default_rng(0)
    picks = covered[rng.choice(len(covered), 1000, replace=False)]
    wcs = WCS(cube["sci_header"]).celestial
    ra, dec = wcs.all_pix2world(picks[:, 1], picks[:, 0], 0)
    r = 20.0 / cfg.pixscale
    out = []
    for n in (1, 1000):
        t = best_of(lambda n=n: extract_spectrum(made, ra[:n], dec[:n]), repeat=3 if n == 1 else 1)
        raw = best_of(lambda n=n: extract_spectrum(cube, ra[:n], dec[:n], point_source=False), repeat=3 if n == 1 else 1)
        sci = np.nan_to_num(cube["sci"])
        aperture = CircularAperture(np.column_stack([picks[:n, 1], picks[:n, 0]]), r)
        base = best_of(lambda aperture=aperture: [aperture_photometry(plane, aperture, method="exact") for plane in sci],
                       repeat=3 if n == 1 else 1)
        out.append(Result("drizzle", f"extract_spectrum, {n} source(s), 120' cube", t,
                          "photutils exact aperture per plane", base,
                          {"ms/source": round(1e3 * t / n, 2), "point_source=False s": round(raw, 4)}))
    return out


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
    return out + _cube_spectra(path, cfg)


#: The code before per-plane boxes in partial cubes and one running sum per worker (the issue's
#: "today's code"), checked out beside the run and measured by the same script.
BASELINE_REV = "fdcc99c"

#: One cluster of ``workers`` single-threaded workers drizzling the frames into a 40' cube with
#: the code on PYTHONPATH: the peak worker memory of its first run (fresh workers), then three
#: timed runs. Run as its own process so each code is imported alone.
_CLUSTER = """
import json, sys, time
from distributed import Client, LocalCluster
from spxdask.drizzle3d import Drizzle3DConfig
from spxdask.drizzle3d.grid import output_grid
from spxdask.drizzle3d.reduce import reduce_partials
from benchmarks import PeakMemory

if __name__ == "__main__":
    paths, workers = json.loads(sys.argv[1]), int(sys.argv[2])
    cfg = Drizzle3DConfig(150.1, 2.2, 40, 40, detector=2)
    grid = output_grid(cfg, 2)
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        with PeakMemory(client) as mem:
            reduce_partials({2: (paths, grid)}, cfg, client)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            reduce_partials({2: (paths, grid)}, cfg, client)
            runs.append(time.perf_counter() - t0)
    print(json.dumps({"runs": runs, "peak": max(mem.peak.values()) / 2**30}))
"""


def _cluster(code: Path, paths: list[str], workers: int, script: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, str(script), json.dumps(paths), str(workers)], capture_output=True,
                          text=True, env=env, cwd=script.parent, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"the drizzle cluster run with {code} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cluster_runs(tmp: Path) -> list[Result]:
    """50 frames of 512² into a 40' cube on 1 and 2 workers, this code and :data:`BASELINE_REV`."""
    sky = simulate_sky(tmp / "many", SimConfig(n_images=50, size=512, n_sources=300, detectors=(2,), radius=0.4, seed=6),
                       scheduler="sync")
    paths = [str(p) for p in sky.files]
    script = tmp / "cluster_run.py"
    script.write_text(_CLUSTER)
    repo = Path(__file__).resolve().parents[1]
    baseline = tmp / "baseline"
    added = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(baseline), BASELINE_REV],
                           capture_output=True, text=True)
    if added.returncode:
        raise RuntimeError(f"the baseline {BASELINE_REV} cannot be checked out (a shallow clone?): {added.stderr.strip()}")
    try:
        now = {w: _cluster(repo, paths, w, script) for w in (1, 2)}
        then = {w: _cluster(baseline, paths, w, script) for w in (1, 2)}
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(baseline)], capture_output=True)
    extra = {f"runs (s), {w} worker(s)": [round(t, 2) for t in now[w]["runs"]] for w in (1, 2)}
    extra.update({f"runs (s), {w} worker(s), {BASELINE_REV}": [round(t, 2) for t in then[w]["runs"]] for w in (1, 2)})
    peaks = {f"peak worker GiB, {w} worker(s)": round(now[w]["peak"], 3) for w in (1, 2)}
    peaks.update({f"peak worker GiB, {w} worker(s), {BASELINE_REV}": round(then[w]["peak"], 3) for w in (1, 2)})
    return [Result("drizzle", "50 frames 512^2 into 40', 2 workers (best of 3)", min(now[2]["runs"]), "1 worker",
                   min(now[1]["runs"]), extra),
            Result("drizzle", f"the same, 2 workers, against {BASELINE_REV}", min(now[2]["runs"]),
                   f"{BASELINE_REV}, 2 workers", min(then[2]["runs"]),
                   {**peaks, "1 -> 2 workers": round(min(now[1]["runs"]) / min(now[2]["runs"]), 2),
                    f"1 -> 2 workers, {BASELINE_REV}": round(min(then[1]["runs"]) / min(then[2]["runs"]), 2)})]


@register("drizzle")
def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        return _per_frame(Path(tmp)) + _cluster_runs(Path(tmp))
