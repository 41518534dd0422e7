"""Region query for batch photometry (reference name): BatchConfig → archive query."""

from __future__ import annotations

from .._io import is_remote
from ..archive.irsa import IrsaArchive
from ..archive.local import LocalArchive
from ..archive.query import ObservationSet, RegionQuery
from ..cluster import setting
from ..spherex.channels import parse_band
from .config import BatchConfig


def archive_for(archive: str | None = None, tap_url: str | None = None, *, index_path=None,
                storage_options: dict | None = None, client=None) -> LocalArchive | IrsaArchive:
    """A local / fsspec archive when ``archive`` is given (indexed on ``client``), else the TAP
    service at ``tap_url`` (default: the ``spxdask.irsa.tap_url`` setting, IRSA; download URLs
    start with the ``spxdask.irsa.data_root`` setting)."""
    if archive:
        return LocalArchive(archive, index_path=index_path, storage_options=storage_options, client=client)
    return IrsaArchive(tap_url or setting("irsa.tap_url"), data_root=setting("irsa.data_root"))


def region_query(config: BatchConfig) -> RegionQuery:
    return RegionQuery(circle=(config.center_ra, config.center_dec, config.radius), coverage=config.coverage_mode,
                       bands=tuple(parse_band(b) for b in config.bands) if config.bands else None,
                       mjd_range=config.mjd_range,
                       collections=tuple(config.collections) if config.collections else None,
                       max_images=config.max_images)


def query_region_observations(config: BatchConfig, *, client=None) -> ObservationSet:
    """Observations of every image overlapping the configured region (``coverage_mode`` "any")
    or containing it ("full"), with the ``max_images`` gate (raises
    :class:`~spxdask.archive.TooManyImagesError` before anything is downloaded). A local
    archive's index is updated on ``client`` (default: the running Client, else threads)."""
    index = config.output_dir / "archive_index.parquet" if config.archive and is_remote(config.archive) else None
    return archive_for(config.archive, config.tap_url, index_path=index, storage_options=config.storage_options,
                       client=client).query(region_query(config))
