"""Batch photometry over sky regions: per-image Dask tasks writing Parquet."""

from .extract import per_image_schema, process_single_image, run_extraction

__all__ = ["per_image_schema", "process_single_image", "run_extraction"]
