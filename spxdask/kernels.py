"""Compile the package's numba loops once per process, before work starts.

numba compiles a loop on its first call (or loads it from its cache, ``cache=True``). On a
fresh machine, container or pod that first call is a compilation whose Python stack is more
than 100 frames deep; when it happens inside a Dask task, the worker's statistical profiler
keeps 100 of those frames, and the profile it sends for a performance report or the
dashboard (a dict nested 200 levels deep) is deeper than ``dask.sizeof`` can walk: distributed
logs ``Sizeof calculation for object of type 'dict' failed``. :func:`warm_workers` has every
worker run :func:`compile_kernels` on a thread of its own, which no profiler samples.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from pathlib import Path


@functools.cache
def compile_kernels() -> None:
    """Run every compiled loop once, on a tiny simulated image: photometry with the joint PSF
    fit and a drizzle partial cube. The file is read and its arrays typed as in a run, so a run
    (of either PSF layout: they share the loops) finds its loops compiled. Once per process."""
    from .drizzle3d import Drizzle3DConfig
    from .drizzle3d.accumulate import partial_cube
    from .drizzle3d.pipeline import output_grid
    from .photometry import PhotometryConfig
    from .photometry.aperture import measure_image
    from .simulate import SimConfig
    from .simulate.sky import make_catalog, plan_survey
    from .simulate.writer import write_image
    from .spherex import L2File

    cfg = SimConfig(n_images=1, size=64, n_sources=20, detectors=(1,), n_epochs=1, min_separation_arcsec=0.0)
    catalog = make_catalog(cfg)
    spec = plan_survey(cfg, catalog)[0]
    with tempfile.TemporaryDirectory(prefix="spxdask-kernels-") as tmp:
        write_image(spec, cfg, Path(tmp))
        with L2File(Path(tmp) / spec.relpath) as l2:
            measure_image(l2, catalog[["targetid", "ra", "dec"]], PhotometryConfig())
            box = Drizzle3DConfig(center_ra=spec.ra, center_dec=spec.dec, width=3.0, height=3.0, detector=1)
            partial_cube(l2, output_grid(box, 1), box)


async def _compile_off_the_profiled_threads() -> None:
    await asyncio.to_thread(compile_kernels)


def warm_workers(client) -> None:
    """Have every worker of ``client`` compile the loops (:func:`compile_kernels`) on a thread
    of its own, before the tasks that use them; at once on workers that already did. A worker
    that cannot is named in a warning: its tasks compile what they call, as without this."""
    answers = client.run(_compile_off_the_profiled_threads, on_error="return")
    for worker, answer in answers.items():
        if isinstance(answer, BaseException):
            logging.getLogger(__name__).warning("worker %s did not compile spxdask's loops ahead: %r", worker, answer)
