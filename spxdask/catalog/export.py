"""Products exported from the catalog: ``sources.parquet`` and the reference's per-source CSVs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dask
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_path, write_parquet_atomic
from ..cluster import compute
from .nested import HEALPIX_29, LIGHTCURVE, SPECTRUM, flatten, keys
from .versions import current_version, partition_files

#: The reference's per-source light-curve CSV columns, plus ``targetid`` first and, last, the
#: fluxes to trust (the model fit's, the PSF fit's, the aperture-corrected total) with the
#: quality flags: the reference's ``flux`` is the raw aperture flux, low by the light outside
#: the aperture.
CSV_COLUMNS = ["targetid", "obs_id", "band", "mjd", "x", "y", "flux", "flux_error", "mag_ab", "mag_ab_error",
               "wavelength", "bandwidth", "flag", "bg_level", "bg_error", "aperture_radius", "flux_model",
               "flux_model_error", "model", "flux_psf", "flux_psf_error", "flux_total", "flux_total_error", "quality",
               "psf_quality"]


def _version(catalog_dir: Path) -> Path:
    version = current_version(catalog_dir)
    if version is None:
        raise FileNotFoundError(f"no catalog in {catalog_dir}")
    return version


def write_sources(catalog_dir: Path, path: Path) -> int:
    """``sources.parquet``: the catalog's base columns (one row per source, by targetid); the rows written."""
    files = partition_files(_version(catalog_dir))
    names = [n for n in pq.read_schema(files[0]).names if n not in (LIGHTCURVE, SPECTRUM, HEALPIX_29)]
    table = pa.concat_tables([pq.read_table(f, columns=names) for f in files]).sort_by("targetid")
    write_parquet_atomic(table, path)
    return table.num_rows


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


def export_csv(catalog_dir: str | Path, csv_dir: str | Path, *, clean: bool = False, client=None) -> int:
    """Write one reference-layout CSV per target from the catalog.

    Parameters
    ----------
    catalog_dir : path
        The catalog.
    csv_dir : path
        The folder of the CSV files (``<targetid>.csv``).
    clean : bool
        Remove ``csv_dir`` first.
    client : distributed.Client, optional
        Where the tasks run (one per partition); default: the running Client, else local threads.

    Returns
    -------
    int
        The number of files written.
    """
    csv_dir = Path(csv_dir)
    if clean and csv_dir.exists():
        shutil.rmtree(csv_dir)
    csv_dir.mkdir(parents=True, exist_ok=True)
    tasks = [dask.delayed(_export_partition)(str(p), str(csv_dir), dask_key_name=f"csv-{p.stem}")
             for p in partition_files(_version(Path(catalog_dir)))]
    return sum(compute(*tasks, client=client))
