"""Forced aperture photometry: the configuration and the per-image kernel (no Dask)."""

from .aperture import COLUMNS, measure_image
from .config import PhotometryConfig

__all__ = ["COLUMNS", "PhotometryConfig", "measure_image"]
