"""Forced aperture photometry: the configuration and the per-image kernel (no Dask)."""

from .aperture import COLUMNS, QUALITY_REASONS, measure_image
from .config import PhotometryConfig

__all__ = ["COLUMNS", "QUALITY_REASONS", "PhotometryConfig", "measure_image"]
