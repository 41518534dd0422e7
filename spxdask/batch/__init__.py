"""Batch photometry over sky regions: per-image Dask tasks writing Parquet, then a shuffle on
targetid into the light-curve store."""

from .aggregate import aggregate_lightcurves, read_lightcurve, read_lightcurves
from .extract import per_image_schema, process_single_image, run_extraction

__all__ = ["aggregate_lightcurves", "per_image_schema", "process_single_image", "read_lightcurve",
           "read_lightcurves", "run_extraction"]
