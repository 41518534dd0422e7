"""Compile the photometry loops once per process, before the image tasks start.

numba compiles a loop on its first call (or loads it from its cache). On a fresh machine,
container or pod that first call is a compilation whose Python stack is more than 100 frames
deep; inside a Dask task, the worker's statistical profiler keeps 100 of those frames, and the
profile it sends for a performance report or the dashboard is deeper than ``dask.sizeof`` can
walk (``Sizeof calculation for object of type 'dict' failed``). The batch pipeline has every
worker, also one that joins later, run :func:`compile_loops` on a thread of its own, which no
profiler samples (:class:`spxdask.cluster.CompileLoops`).
"""

from __future__ import annotations

import functools
import tempfile

from ..photometry import PhotometryConfig, measure_image
from ..simulate.driver import write_tiny_image
from ..spherex import L2File


@functools.cache
def compile_loops() -> None:
    """Run the photometry loops (the joint PSF fit and the galaxy models included: an
    exponential and a de Vaucouleurs source, whose profiles are the commonest) once, on a tiny
    simulated image read as in a run, so a run of either PSF layout finds them compiled. Once
    per process."""
    with tempfile.TemporaryDirectory(prefix="spxdask-compile-") as tmp:
        path, _, catalog = write_tiny_image(tmp)
        kind = ["EXP", "DEV"] + ["PSF"] * (len(catalog) - 2)
        shaped = catalog[["targetid", "ra", "dec"]].assign(type=kind, shape_r=2.0, shape_e1=0.1, shape_e2=0.0)
        with L2File(path) as l2:
            measure_image(l2, shaped, PhotometryConfig())
