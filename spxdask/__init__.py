"""spxdask: SPHEREx spectral images to light curves and spectral cubes, at any scale, on Dask."""

from .photometry import PhotometryConfig
from .source import Source
from .spherex import L2File, L2FormatError

__version__ = "0.1.0"
__all__ = ["L2File", "L2FormatError", "PhotometryConfig", "Source", "__version__"]
