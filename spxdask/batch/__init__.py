"""Batch photometry over sky regions (the reference's ``spxquery.batch`` names): query →
download → per-image Dask photometry tasks writing Parquet → the run's HATS catalog (HEALPix
partitions, no shuffle): per source its light curve, channel spectrum and variability test."""

from ..catalog.read import read_lightcurve, read_lightcurves, read_spectra, read_spectrum
from ..spectra import SpectraConfig
from ..targets import CatalogError, load_catalog, load_neighbours
from .aggregate import aggregate_lightcurves
from .config import BatchConfig
from .extract import extract_images, process_single_image, run_extraction
from .pipeline import BatchPipeline, RunSummary, load_query_summary, run_batch
from .query import query_region_observations

__all__ = ["BatchConfig", "BatchPipeline", "CatalogError", "RunSummary", "SpectraConfig", "aggregate_lightcurves",
           "extract_images", "load_catalog", "load_neighbours", "load_query_summary", "process_single_image",
           "query_region_observations", "read_lightcurve", "read_lightcurves", "read_spectra", "read_spectrum",
           "run_batch", "run_extraction"]
