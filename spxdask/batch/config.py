"""Batch configuration (reference names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import Config, require, require_position
from .._io import is_http_url, is_remote
from ..catalog import PARTITION_ROWS
from ..compat import check_config
from ..layout import RunLayout
from ..photometry import PhotometryConfig
from ..spectra import SpectraConfig
from ..spherex.channels import parse_band


@dataclass
class BatchConfig(Config):
    """Multi-source batch photometry over a sky region (the reference's fields keep their names and defaults).

    Parameters
    ----------
    center_ra, center_dec : float
        Centre of the region (deg).
    radius : float
        Radius of the region (deg).
    catalog_path : path, URL or lsdb.Catalog
        The targets: a HATS catalog or collection (folder or URL, read per image where it
        is), an ``lsdb.Catalog``, or a flat file (CSV, Parquet file or folder, FITS binary
        table, VOTable; laid out once as HATS in the run's ``targets/``). An id, ra and dec
        (deg) column, named by the next three fields or found by their usual names.
    coverage_mode : {"any", "full"}
        Images overlapping the region, or containing it.
    bands : list of str, optional
        Detectors to use ("D1"... "D6", or 1-6); default all.
    mjd_range : (float, float), optional
        Only images taken within these MJDs.
    max_images : int
        At most this many images; more stops the query before any download.
    output_dir : Path
        The run folder (:class:`spxdask.layout.RunLayout`).
    max_download_workers : int
        Concurrent downloads.
    max_extract_workers : int
        The reference's pool size, accepted and ignored: the cluster decides.
    photometry : PhotometryConfig
        How each image is measured.
    num_buckets, keep_bucket_files
        The reference's knobs, accepted and ignored: there are no bucket files.
    archive : str, optional
        A local folder or fsspec URL of L2 files (IRSA's layout); default: the TAP service.
    tap_url : str, optional
        The TAP service (default: the ``spxdask.irsa.tap_url`` setting, IRSA).
    read_in_place : bool
        Measure remote files where they are (ranged reads of the rows used) instead of
        downloading them into ``output_dir/images/``.
    copy_images : bool
        Copy a local archive's files into the run instead of reading them in place.
    collections : list of str, optional
        Only these collections (e.g. ``["spherex_qr2"]``).
    export_csv : bool
        Also write the reference's per-source CSV files.
    storage_options : dict, optional
        fsspec options for remote files, e.g. ``{"anon": True}`` for the public S3 bucket.
    spectra : SpectraConfig
        How the catalog stage bins measurements and tests variability.
    neighbour_catalog_path : path, URL or lsdb.Catalog, optional
        A deeper catalog (any form of ``catalog_path``, with ra, dec) whose sources enter the joint PSF fit of
        every image they fall in, so the targets' PSF fluxes are deblended from them (only the
        targets get rows).
    partition_rows : int
        Light-curve rows per partition of the run's catalog at most.
    report : bool
        Write ``report.html``, the run at a glance, at the end of ``run_all``.
    archive_index : Path, optional
        Where the archive's index lives; default in the run folder for a remote archive, in
        the user's cache for a local one (an archive is only ever read).
    id_column, ra_column, dec_column : str, optional
        The catalog's names of the id, ra and dec columns (default: ``targetid``,
        ``source_id``, ``objid`` or ``id``; ``ra``, ``ra_deg``, ...; ``dec``, ``dec_deg``, ...).
    """

    center_ra: float
    center_dec: float
    radius: float
    catalog_path: Any
    coverage_mode: str = "any"
    bands: list[str] | None = None
    mjd_range: tuple[float, float] | None = None
    max_images: int = 500
    output_dir: Path = field(default_factory=lambda: Path("batch_output"))
    max_download_workers: int = 4
    max_extract_workers: int = 12
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    num_buckets: int = 64
    keep_bucket_files: bool = False
    archive: str | None = None
    tap_url: str | None = None
    read_in_place: bool = False
    copy_images: bool = False
    collections: list[str] | None = None
    export_csv: bool = False
    storage_options: dict | None = None
    spectra: SpectraConfig = field(default_factory=SpectraConfig)
    neighbour_catalog_path: Any = None
    partition_rows: int = PARTITION_ROWS
    report: bool = True
    archive_index: Path | None = None
    id_column: str | None = None
    ra_column: str | None = None
    dec_column: str | None = None

    def __post_init__(self) -> None:
        check_config(self)
        self.catalog_path = _catalog(self.catalog_path)
        self.neighbour_catalog_path = _catalog(self.neighbour_catalog_path)
        self.output_dir = Path(self.output_dir)
        if self.archive_index is not None:
            self.archive_index = Path(self.archive_index)
        require(self, self.output_dir.is_dir() or not self.output_dir.exists(), "output_dir",
                "is a file; give a folder (made when missing)")
        require_position(self, "center_ra", "center_dec")
        require(self, 0 < self.radius <= 90, "radius", "must be within (0, 90] deg")
        require(self, self.coverage_mode in ("any", "full"), "coverage_mode", "must be 'any' or 'full'")
        if isinstance(self.bands, str):  # "D1,D3", as the CLI takes them
            self.bands = [b for b in self.bands.split(",") if b.strip()]
        if self.bands is not None:
            self.bands = [f"D{parse_band(b.strip() if isinstance(b, str) else b)}" for b in self.bands]
        if self.mjd_range is not None:
            lo, hi = self.mjd_range
            require(self, lo <= hi, "mjd_range", "must be (min, max)")
            self.mjd_range = (float(lo), float(hi))
        require(self, self.max_images >= 0, "max_images", "must be >= 0")
        for name in ("max_download_workers", "max_extract_workers", "partition_rows"):
            require(self, getattr(self, name) >= 1, name, "must be >= 1")
        if self.archive and self.tap_url:
            raise ValueError("BatchConfig: give archive or tap_url, not both")
        require(self, not (self.read_in_place and self.copy_images), "copy_images",
                "contradicts read_in_place=True")
        require(self, self.tap_url is None or is_http_url(self.tap_url), "tap_url",
                "must be an http(s) URL")

    @property
    def in_place(self) -> bool:
        """Whether the images are measured where they are (nothing copied into
        ``image_dir``): always for a local or mounted archive unless ``copy_images``; for a
        remote archive or TAP only with ``read_in_place``."""
        local = bool(self.archive) and not is_remote(str(self.archive))
        return self.read_in_place or (local and not self.copy_images)

    @property
    def layout(self) -> RunLayout:
        """Where each output of the run lies."""
        return RunLayout(self.output_dir)

    @property
    def image_dir(self) -> Path:
        """Downloaded files."""
        return self.layout.images

    @property
    def per_image_dir(self) -> Path:
        """The per-image Parquet files."""
        return self.layout.per_image

    @property
    def catalog_dir(self) -> Path:
        """The run's HATS catalog."""
        return self.layout.catalog

    @property
    def spectra_dir(self) -> Path:
        """The catalog's flat channel spectra."""
        return self.layout.spectra

    @property
    def sources_path(self) -> Path:
        """Per-source summaries."""
        return self.layout.sources

    @property
    def csv_dir(self) -> Path:
        """The per-source CSV export."""
        return self.layout.csv

    @property
    def bucket_dir(self) -> Path:
        """Kept for compatibility: there are no bucket files."""
        return self.output_dir / "buckets"

    @property
    def manifest_path(self) -> Path:
        """Per image: status, error, timings."""
        return self.layout.manifest


def _catalog(value: Any) -> Any:
    """A local catalog's path as a Path; a URL as text; a catalog object as it is."""
    if isinstance(value, str) and not is_remote(value):
        return Path(value)
    return value
