"""Compile the drizzle loops once per process, before the partial-cube tasks start (why:
:mod:`spxdask.batch.warmup`)."""

from __future__ import annotations

import functools
import tempfile

from ..simulate.driver import write_tiny_image
from ..spherex import L2File
from .accumulate import partial_cube
from .config import Drizzle3DConfig
from .grid import output_grid


@functools.cache
def compile_loops() -> None:
    """Drizzle a tiny simulated image into a partial cube, read as in a run. Once per process."""
    with tempfile.TemporaryDirectory(prefix="spxdask-compile-") as tmp:
        path, spec, _ = write_tiny_image(tmp)
        with L2File(path) as l2:
            box = Drizzle3DConfig(center_ra=spec.ra, center_dec=spec.dec, width=3.0, height=3.0, detector=1)
            partial_cube(l2, output_grid(box, 1), box)
