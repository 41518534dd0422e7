"""Light curves (reference name): the catalog stage (:mod:`spxdask.catalog`) gathers the
per-image rows of every source into the run's HATS catalog (one row per source, its light
curve nested), with the reference's per-source CSV export on request."""

from __future__ import annotations

from pathlib import Path

from ..catalog import PARTITION_ROWS, build_catalog
from ..catalog.export import export_csv
from ..spectra import SpectraConfig


def aggregate_lightcurves(image_csv_dir: str | Path, lightcurve_dir: str | Path,
                          bucket_dir: str | Path | None = None, num_buckets: int = 64, clean: bool = False,
                          keep_bucket_files: bool = False, *, spectra: SpectraConfig | None = None,
                          partition_rows: int = PARTITION_ROWS, csv_dir: str | Path | None = None,
                          client=None) -> int:
    """Gather the per-image photometry of every source into the run's catalog.

    Parameters
    ----------
    image_csv_dir : path
        The per-image Parquet folder (the reference's name is kept for keyword compatibility).
    lightcurve_dir : path
        The catalog folder (a run's is ``<output_dir>/catalog``): built, or brought up to date
        (only the partitions whose sources gained or lost rows are rewritten). The readers
        (:func:`~spxdask.batch.read_lightcurve`, ``lsdb.open_catalog``) take this folder.
    bucket_dir, num_buckets
        Accepted for compatibility with the reference and ignored (:mod:`spxdask.compat`);
        there are no bucket files here.
    clean : bool
        Also remove ``csv_dir`` before exporting.
    keep_bucket_files : bool
        Accepted for compatibility with the reference and ignored.
    spectra : SpectraConfig, optional
        Also the channel spectra and per-source summaries (the pipeline's spectra); None:
        light curves and counts only.
    partition_rows : int
        Light-curve rows per catalog partition at most.
    csv_dir : path, optional
        Also export one reference-layout CSV per target (``<targetid>.csv``).
    client : distributed.Client, optional
        Where the tasks run; default: the running Client, else local threads.

    Returns
    -------
    int
        Number of distinct targets in the catalog.
    """
    from ..compat import ignored

    ignored("aggregate_lightcurves", bucket_dir=bucket_dir, num_buckets=num_buckets, keep_bucket_files=keep_bucket_files)
    made = build_catalog(image_csv_dir, lightcurve_dir, spectra=spectra, partition_rows=partition_rows, client=client)
    if csv_dir is not None:
        export_csv(lightcurve_dir, csv_dir, clean=clean, client=client)
    return made.sources
