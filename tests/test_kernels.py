"""Compiling the loops ahead (spxdask.batch.warmup, spxdask.drizzle3d.warmup, registered as
spxdask.cluster.CompileLoops): it covers what a run calls, and workers do it on a thread of
their own, also those that join later."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
from distributed import Client, LocalCluster, Worker

from spxdask.batch.warmup import compile_loops
from spxdask.cluster import compile_ahead

# In a fresh process: the compiled loops' signatures after compile_loops, and after measuring
# and drizzling real files of both PSF layouts.
SCRIPT = """
import json, sys
import numba
import pandas as pd
from spxdask.batch.warmup import compile_loops as compile_photometry
from spxdask.drizzle3d.warmup import compile_loops as compile_drizzle

def signatures():
    return {f"{name}.{attr}": len(value.signatures) for name, module in list(sys.modules.items())
            if name.startswith("spxdask") for attr, value in vars(module).items()
            if isinstance(value, numba.core.registry.CPUDispatcher)}

compile_photometry()
compile_drizzle()
before = signatures()
from spxdask import PhotometryConfig
from spxdask.batch.extract import process_single_image
from spxdask.drizzle3d import Drizzle3DConfig
from spxdask.drizzle3d.accumulate import partial_cube
from spxdask.drizzle3d.grid import output_grid
from spxdask.spherex import L2File
out, catalog, *files = sys.argv[1:]
for path in files:
    process_single_image(path, pd.read_csv(catalog), PhotometryConfig(), out)
    l2 = L2File(path)
    ra, dec = l2.footprint().mean(axis=0)
    box = Drizzle3DConfig(center_ra=ra, center_dec=dec, width=6, height=6, detector=l2.meta.detector)
    assert partial_cube(l2, output_grid(box, l2.meta.detector), box).flux.size > 0
print(json.dumps({"before": before, "after": signatures()}))
"""


def test_compiling_ahead_covers_what_a_run_calls(sky_qr2, sky_qr3, tmp_path):
    files = [str(sky_qr2.files[0]), str(sky_qr3.files[0])]
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out"), str(sky_qr2.catalog), *files],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout.splitlines()[-1])
    assert sum(counts["before"].values()) >= 12  # photometry, PSF, drizzle loops
    assert counts["after"] == counts["before"], "the run compiled loops that compile_loops did not"
    assert any((tmp_path / "out").glob("*.parquet"))


def _compiled() -> int:
    from spxdask.batch.warmup import compile_loops

    return compile_loops.cache_info().currsize


def test_every_worker_compiles_on_a_thread_no_profiler_samples():
    """After compile_ahead each worker has compiled, and the task threads' profile (what the
    performance reports and the dashboard fetch) holds no sample of it."""
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        assert client.run(_compiled) == {address: 0 for address in client.scheduler_info()["workers"]}
        compile_ahead(client, compile_loops)
        assert client.run(_compiled) == {address: 1 for address in client.scheduler_info()["workers"]}
        assert client.profile()["count"] == 0


def test_a_worker_that_joins_later_compiles_before_its_first_task(sky_qr2, tmp_path):
    """A worker added mid-run (an adaptive Gateway or Kubernetes cluster) compiles when it
    starts: the plugin is the scheduler's, not a call made once to the workers of the moment."""
    from spxdask import PhotometryConfig
    from spxdask.batch import extract_images

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        first = set(client.scheduler_info()["workers"])
        extract_images(sky_qr2.files[:2], pd.read_csv(sky_qr2.catalog), PhotometryConfig(), tmp_path / "a", client=client)

        async def join():
            return await Worker(cluster.scheduler_address, nthreads=1)

        worker = client.sync(join)
        try:
            client.wait_for_workers(2)
            (late,) = set(client.scheduler_info()["workers"]) - first
            assert client.run(_compiled, workers=[late]) == {late: 1}
            assert client.profile(workers=[late])["count"] == 0
        finally:
            client.sync(worker.close)
