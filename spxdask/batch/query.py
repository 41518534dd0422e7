"""Region query for batch photometry (reference name): BatchConfig → archive query."""

from __future__ import annotations

from ..archive.open import open_archive
from ..archive.query import ObservationSet, RegionQuery
from ..spherex.channels import parse_band
from .config import BatchConfig


def region_query(config: BatchConfig) -> RegionQuery:
    """The query of a batch config's region, bands, dates, collections and image gate."""
    return RegionQuery(circle=(config.center_ra, config.center_dec, config.radius), coverage=config.coverage_mode,
                       bands=tuple(parse_band(b) for b in config.bands) if config.bands else None,
                       mjd_range=config.mjd_range,
                       collections=tuple(config.collections) if config.collections else None,
                       max_images=config.max_images)


def query_region_observations(config: BatchConfig, *, client=None) -> ObservationSet:
    """Observations of every image of the configured region (reference name).

    Parameters
    ----------
    config : BatchConfig
        The region (``coverage_mode`` "any": images overlapping it; "full": images containing
        it), bands, dates and the ``max_images`` gate.
    client : distributed.Client, optional
        Where a local archive's index is updated (default: the running Client, else threads).

    Returns
    -------
    ObservationSet
        One record per image, with the files that could not be read.

    Raises
    ------
    spxdask.archive.TooManyImagesError
        More images than ``max_images``, before anything is downloaded.
    """
    return open_archive(archive=config.archive, tap_url=config.tap_url, run_dir=config.output_dir,
                        index_path=config.archive_index, storage_options=config.storage_options,
                        client=client).query(region_query(config))
