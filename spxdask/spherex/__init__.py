"""What a SPHEREx Level-2 file is: the format's constants (:mod:`.format`), detectors and
channels, flags, the file reader (:mod:`.l2`: file access; :mod:`.headers`: WCS and PSF header
parsing; :mod:`.wave`: per-pixel wavelengths) and PSF models. No Dask in here; the simulator
of synthetic files is :mod:`spxdask.simulate`."""

from .flags import Flag
from .l2 import L2File, L2FormatError, L2Meta, read_footprint

__all__ = ["Flag", "L2File", "L2FormatError", "L2Meta", "read_footprint"]
