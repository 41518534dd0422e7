"""spxdask: SPHEREx spectral images to light curves and spectral cubes, at any scale, on Dask."""

from importlib.metadata import version

from .photometry import PhotometryConfig
from .source import Source
from .spherex import L2File, L2FormatError

__version__ = version("spxdask")  # the one place is pyproject.toml
__all__ = ["L2File", "L2FormatError", "PhotometryConfig", "Source", "__version__"]
