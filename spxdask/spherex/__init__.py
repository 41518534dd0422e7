"""What a SPHEREx Level-2 file is: detectors and channels, flags, the file reader, PSF models,
and a simulator of faithful synthetic files. Nothing in here uses Dask, except the thin
parallel driver :func:`spxdask.spherex.simulate.simulate_sky`."""

from .flags import Flag
from .l2 import L2File, L2FormatError, L2Meta, read_footprint

__all__ = ["Flag", "L2File", "L2FormatError", "L2Meta", "read_footprint"]
