"""Light curves: the catalog stage (:mod:`spxdask.catalog`) gathers the per-image rows of every
source into the run's HATS catalog (``<output_dir>/catalog``: one row per source, its light
curve nested); fast reads of one or many sources from it, and the reference's per-source CSV
export."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import dask
import pandas as pd
import pyarrow.parquet as pq

from .._io import atomic_path
from ..catalog import build_catalog
from ..catalog.build import PARTITION_ROWS, SORT_KEYS, current_version, partition_files
from ..catalog.nested import LIGHTCURVE, flatten, keys
from ..catalog.read import read_nested
from ..cluster import compute
from ..spectra import SpectraConfig

#: The reference's per-source light-curve CSV columns, plus ``targetid`` first and the PSF-fit
#: flux last.
CSV_COLUMNS = ["targetid", "obs_id", "band", "mjd", "x", "y", "flux", "flux_error", "mag_ab", "mag_ab_error",
               "wavelength", "bandwidth", "flag", "bg_level", "bg_error", "aperture_radius", "flux_psf",
               "flux_psf_error"]


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
        The catalog (``<output_dir>/catalog``): built, or brought up to date (only the
        partitions whose sources gained or lost rows are rewritten).
    bucket_dir, num_buckets, keep_bucket_files
        Accepted for compatibility with the reference and ignored (:mod:`spxdask.compat`);
        there are no bucket files here.
    clean : bool
        Also remove ``csv_dir`` before exporting.
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


def csv_name(targetid) -> str:
    """The file name of a target's CSV: its exact id as text (unsafe characters replaced)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(targetid)).lstrip(".") + ".csv"


def _export_partition(path: str, folder: str) -> int:
    """One CSV per source of one catalog partition; the number written."""
    rows = flatten(pq.read_table(path, columns=[*keys(LIGHTCURVE), LIGHTCURVE]), LIGHTCURVE)
    for tid, own in rows.groupby("targetid", sort=False):
        with atomic_path(Path(folder) / csv_name(tid)) as tmp:
            own[CSV_COLUMNS].to_csv(tmp, index=False)
    return int(rows["targetid"].nunique())


def export_csv(catalog_dir: str | Path, csv_dir: str | Path, clean: bool = False, *, client=None) -> int:
    """Write one reference-layout CSV per target from the catalog (one task per partition, on
    ``client``: default the running Client, else local threads)."""
    csv_dir = Path(csv_dir)
    if clean and csv_dir.exists():
        shutil.rmtree(csv_dir)
    csv_dir.mkdir(parents=True, exist_ok=True)
    version = current_version(Path(catalog_dir))
    if version is None:
        raise FileNotFoundError(f"no catalog in {catalog_dir}")
    tasks = [dask.delayed(_export_partition)(str(p), str(csv_dir), dask_key_name=f"csv-{p.stem}")
             for p in partition_files(version)]
    return sum(compute(*tasks, client=client))


def read_lightcurves(output_dir: str | Path, targetids: Sequence) -> pd.DataFrame:
    """Rows of the given targets, sorted by (targetid, mjd, wavelength), from the catalog:
    one row group of one partition per target."""
    rows = read_nested(Path(output_dir) / "catalog", targetids, LIGHTCURVE)
    return rows.sort_values(SORT_KEYS, kind="stable", ignore_index=True)


def read_lightcurve(output_dir: str | Path, targetid) -> pd.DataFrame:
    """One target's rows (empty when it was never measured), sorted by mjd then wavelength."""
    return read_lightcurves(output_dir, [targetid])
