"""Light curves: a Dask shuffle of the per-image Parquet files on ``targetid`` into a sorted
Parquet store, and fast reads of one or many sources from it.

Store layout (``<output_dir>/lightcurves/``, a :mod:`spxdask.store`): ``part.<i>.parquet``
with rows sorted by (targetid, mjd, wavelength), row groups covering increasing targetid
ranges, and ``_targetid_index.parquet``. The store is built under a temporary name and swapped
in as a whole, so readers never see a half-written store and a rerun replaces it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from .._io import atomic_path
from ..cluster import setting
from ..store import parts, read_targets, swap_in, temporary_beside, write_index

SORT_KEYS = ["targetid", "mjd", "wavelength"]
#: The reference's per-source light-curve CSV columns, plus ``targetid``.
CSV_COLUMNS = ["targetid", "obs_id", "band", "mjd", "x", "y", "flux", "flux_error", "mag_ab", "mag_ab_error",
               "wavelength", "bandwidth", "flag", "bg_level", "bg_error", "aperture_radius"]
ROW_GROUP_ROWS = 32_768
TARGET_PARTITION_ROWS = 500_000


def _divisions(per_image_dir: Path, npartitions: int | None) -> tuple[list, int]:
    """Range-partition boundaries from the distinct target ids (one pass over one column),
    and the number of distinct ids."""
    dataset = ds.dataset(per_image_dir, format="parquet")
    ids = dataset.to_table(columns=["targetid"]).column("targetid")
    n_rows = len(ids)
    unique = np.sort(pa.compute.unique(ids).to_numpy(zero_copy_only=False))
    if unique.size == 0:
        raise ValueError(f"no photometry rows in {per_image_dir}: nothing to aggregate")
    n = npartitions or max(1, min(unique.size, -(-n_rows // TARGET_PARTITION_ROWS)))
    cuts = np.unique(np.linspace(0, unique.size - 1, n + 1).round().astype(int))
    divisions = [unique[i].item() if hasattr(unique[i], "item") else unique[i] for i in cuts]
    if len(divisions) == 1:
        divisions = divisions * 2
    return divisions, int(unique.size)


def _shuffle_method() -> str:
    """P2P on a distributed Client (the ``spxdask.shuffle_method`` setting may say "tasks"),
    the task-based shuffle on local schedulers."""
    from distributed import get_client

    try:
        get_client()
    except ValueError:
        return "tasks"
    return setting("shuffle_method", "p2p")


def _sort_partition(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by (targetid, mjd, wavelength); text columns get one dtype whatever the shuffle."""
    df = df.reset_index().sort_values(SORT_KEYS, kind="stable", ignore_index=True)
    text = [c for c in df.columns if pd.api.types.is_string_dtype(df[c])]
    return df.astype({c: "str" for c in text})


def aggregate_lightcurves(image_csv_dir: str | Path, lightcurve_dir: str | Path,
                          bucket_dir: str | Path | None = None, num_buckets: int = 64, clean: bool = False,
                          keep_bucket_files: bool = False, *, npartitions: int | None = None,
                          csv_dir: str | Path | None = None) -> int:
    """Shuffle the per-image photometry on ``targetid`` into the light-curve store.

    Parameters
    ----------
    image_csv_dir : path
        The per-image Parquet folder (the reference's name is kept for keyword compatibility).
    lightcurve_dir : path
        The store folder (``<output_dir>/lightcurves``); rebuilt as a whole and swapped in.
    bucket_dir, num_buckets, keep_bucket_files
        Accepted for compatibility with the reference; there are no bucket files here.
    clean : bool
        Also remove ``csv_dir`` before exporting (a store rerun always replaces the store).
    npartitions : int, optional
        Output partitions (default: about 500,000 rows each).
    csv_dir : path, optional
        Also export one reference-layout CSV per target (``<targetid>.csv``).

    Returns
    -------
    int
        Number of distinct targets in the store.
    """
    per_image = Path(image_csv_dir).resolve()  # the arrow filesystem wants absolute paths
    final = Path(lightcurve_dir).resolve()
    if not any(per_image.glob("*.parquet")):
        raise FileNotFoundError(f"no per-image Parquet files in {per_image}")
    divisions, n_targets = _divisions(per_image, npartitions)
    ddf = dd.read_parquet(str(per_image), index=False, filesystem="arrow")
    ddf = ddf.set_index("targetid", divisions=divisions, shuffle_method=_shuffle_method())
    ddf = ddf.map_partitions(_sort_partition, meta=_sort_partition(ddf._meta))
    tmp = temporary_beside(final)
    try:
        ddf.to_parquet(str(tmp), write_index=False, row_group_size=ROW_GROUP_ROWS,
                       write_metadata_file=False, compute=True)
        write_index(tmp)
        swap_in(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if csv_dir is not None:
        export_csv(final, csv_dir, clean=clean)
    return n_targets


def csv_name(targetid) -> str:
    """The file name of a target's CSV: its exact id as text (unsafe characters replaced)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(targetid)).lstrip(".") + ".csv"


def _export_partition(df: pd.DataFrame, folder: str) -> pd.DataFrame:
    for tid, rows in df.groupby("targetid", sort=False):
        with atomic_path(Path(folder) / csv_name(tid)) as tmp:
            rows[CSV_COLUMNS].to_csv(tmp, index=False)
    return pd.DataFrame({"n": [df["targetid"].nunique()]})


def export_csv(store: str | Path, csv_dir: str | Path, clean: bool = False) -> int:
    """Write one reference-layout CSV per target from the store (one task per partition)."""
    csv_dir = Path(csv_dir)
    if clean and csv_dir.exists():
        shutil.rmtree(csv_dir)
    csv_dir.mkdir(parents=True, exist_ok=True)
    ddf = dd.read_parquet([str(p) for p in parts(Path(store))], columns=CSV_COLUMNS, index=False)
    counts = ddf.map_partitions(_export_partition, str(csv_dir), meta={"n": "int64"}).compute()
    return int(counts["n"].sum())


def read_lightcurves(output_dir: str | Path, targetids: Sequence) -> pd.DataFrame:
    """Rows of the given targets, sorted by (targetid, mjd, wavelength), reading only the
    row groups whose targetid range can hold them."""
    return read_targets(Path(output_dir) / "lightcurves", targetids, SORT_KEYS, what="light-curve store",
                        stage="aggregate")


def read_lightcurve(output_dir: str | Path, targetid) -> pd.DataFrame:
    """One target's rows (empty when it was never measured), sorted by mjd then wavelength."""
    return read_lightcurves(output_dir, [targetid])
