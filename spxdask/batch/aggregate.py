"""Light curves: a Dask shuffle of the per-image Parquet files on ``targetid`` into a sorted
Parquet store, and fast reads of one or many sources from it.

Store layout (``<output_dir>/lightcurves/``, a :mod:`spxdask.store`): ``part.<i>.parquet``
with rows sorted by (targetid, mjd, wavelength), row groups covering increasing targetid
ranges, and ``_targetid_index.parquet``. The store is built under a temporary name and swapped
in as a whole, so readers never see a half-written store and a rerun replaces it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .._io import atomic_path
from ..cluster import compute, running_client, setting
from ..store import PROVENANCE, parts, read_targets, swap_in, temporary_beside, write_index
from .extract import recorded_fingerprint

SORT_KEYS = ["targetid", "mjd", "wavelength"]
#: The reference's per-source light-curve CSV columns, plus ``targetid`` first and the PSF-fit
#: flux last.
CSV_COLUMNS = ["targetid", "obs_id", "band", "mjd", "x", "y", "flux", "flux_error", "mag_ab", "mag_ab_error",
               "wavelength", "bandwidth", "flag", "bg_level", "bg_error", "aperture_radius", "flux_psf",
               "flux_psf_error"]
ROW_GROUP_ROWS = 32_768
#: Bytes of per-image Parquet read by one input partition of the shuffle.
INPUT_BYTES = 64 * 2**20
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


def _read_files(paths: list[str]) -> pd.DataFrame:
    return pa.concat_tables([pq.read_table(p) for p in paths]).to_pandas()


def _per_image_frame(per_image: Path) -> dd.DataFrame:
    """The per-image files as a Dask DataFrame, files batched up to :data:`INPUT_BYTES` per
    partition. Built with ``from_map``: dask's ``read_parquet`` samples file statistics with an
    eager compute on the default scheduler, not on the client the caller chose."""
    files = sorted(per_image.glob("*.parquet"))
    batches: list[list[str]] = [[]]
    size = 0
    for f in files:
        nbytes = f.stat().st_size
        if batches[-1] and size + nbytes > INPUT_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(str(f))
        size += nbytes
    meta = pq.read_schema(files[0]).empty_table().to_pandas()
    return dd.from_map(_read_files, batches, meta=meta, label="read-per-image", enforce_metadata=False)


def _shuffle_method(client) -> str:
    """P2P on a distributed Client (the ``spxdask.shuffle_method`` setting may say "tasks"),
    the task-based shuffle on local schedulers."""
    return "tasks" if client is None else setting("shuffle_method", "p2p")


def _sort_partition(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by (targetid, mjd, wavelength); text columns get one dtype whatever the shuffle."""
    df = df.reset_index().sort_values(SORT_KEYS, kind="stable", ignore_index=True)
    text = [c for c in df.columns if pd.api.types.is_string_dtype(df[c])]
    return df.astype({c: "str" for c in text})


def aggregate_lightcurves(image_csv_dir: str | Path, lightcurve_dir: str | Path,
                          bucket_dir: str | Path | None = None, num_buckets: int = 64, clean: bool = False,
                          keep_bucket_files: bool = False, *, npartitions: int | None = None,
                          csv_dir: str | Path | None = None, client=None) -> int:
    """Shuffle the per-image photometry on ``targetid`` into the light-curve store.

    Parameters
    ----------
    image_csv_dir : path
        The per-image Parquet folder (the reference's name is kept for keyword compatibility).
    lightcurve_dir : path
        The store folder (``<output_dir>/lightcurves``); rebuilt as a whole and swapped in.
    bucket_dir, num_buckets, keep_bucket_files
        Accepted for compatibility with the reference and ignored (:mod:`spxdask.compat`);
        there are no bucket files here.
    clean : bool
        Also remove ``csv_dir`` before exporting (a store rerun always replaces the store).
    npartitions : int, optional
        Output partitions (default: about 500,000 rows each).
    csv_dir : path, optional
        Also export one reference-layout CSV per target (``<targetid>.csv``).
    client : distributed.Client, optional
        Where the shuffle runs (P2P); default: the running Client, else local threads (a
        task-based shuffle).

    Returns
    -------
    int
        Number of distinct targets in the store.
    """
    from ..compat import ignored

    ignored("aggregate_lightcurves", bucket_dir=bucket_dir, num_buckets=num_buckets, keep_bucket_files=keep_bucket_files)
    per_image = Path(image_csv_dir).resolve()  # the arrow filesystem wants absolute paths
    final = Path(lightcurve_dir).resolve()
    if not any(per_image.glob("*.parquet")):
        raise FileNotFoundError(f"no per-image Parquet files in {per_image}")
    divisions, n_targets = _divisions(per_image, npartitions)
    client = client or running_client()
    ddf = _per_image_frame(per_image)
    ddf = ddf.set_index("targetid", divisions=divisions, shuffle_method=_shuffle_method(client))
    ddf = ddf.map_partitions(_sort_partition, meta=_sort_partition(ddf._meta))
    tmp = temporary_beside(final)
    try:
        compute(ddf.to_parquet(str(tmp), write_index=False, row_group_size=ROW_GROUP_ROWS,
                               write_metadata_file=False, compute=False), client=client)
        write_index(tmp)
        (tmp / PROVENANCE).write_text(json.dumps({"per_image": built_from(per_image), "targets": n_targets},
                                                 sort_keys=True))
        swap_in(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if csv_dir is not None:
        export_csv(final, csv_dir, clean=clean, client=client)
    return n_targets


def built_from(per_image_dir: str | Path) -> dict[str, str | None]:
    """The per-image files of a folder and the fingerprints they were written with."""
    return {p.name: recorded_fingerprint(p) for p in sorted(Path(per_image_dir).glob("*.parquet"))}


def current_targets(per_image_dir: str | Path, lightcurve_dir: str | Path) -> int | None:
    """The store's number of targets when it was built from exactly the per-image files now
    in the folder (same names, same fingerprints), else None."""
    recorded = Path(lightcurve_dir) / PROVENANCE
    if not recorded.exists():
        return None
    made = json.loads(recorded.read_text())
    return int(made["targets"]) if made.get("per_image") == built_from(per_image_dir) else None


def csv_name(targetid) -> str:
    """The file name of a target's CSV: its exact id as text (unsafe characters replaced)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(targetid)).lstrip(".") + ".csv"


def _export_partition(df: pd.DataFrame, folder: str) -> pd.DataFrame:
    for tid, rows in df.groupby("targetid", sort=False):
        with atomic_path(Path(folder) / csv_name(tid)) as tmp:
            rows[CSV_COLUMNS].to_csv(tmp, index=False)
    return pd.DataFrame({"n": [df["targetid"].nunique()]})


def export_csv(store: str | Path, csv_dir: str | Path, clean: bool = False, *, client=None) -> int:
    """Write one reference-layout CSV per target from the store (one task per partition, on
    ``client``: default the running Client, else local threads)."""
    csv_dir = Path(csv_dir)
    if clean and csv_dir.exists():
        shutil.rmtree(csv_dir)
    csv_dir.mkdir(parents=True, exist_ok=True)
    ddf = dd.read_parquet([str(p) for p in parts(Path(store))], columns=CSV_COLUMNS, index=False)
    (counts,) = compute(ddf.map_partitions(_export_partition, str(csv_dir), meta={"n": "int64"}), client=client)
    return int(counts["n"].sum())


def read_lightcurves(output_dir: str | Path, targetids: Sequence) -> pd.DataFrame:
    """Rows of the given targets, sorted by (targetid, mjd, wavelength), reading only the
    row groups whose targetid range can hold them."""
    return read_targets(Path(output_dir) / "lightcurves", targetids, SORT_KEYS, what="light-curve store",
                        stage="aggregate")


def read_lightcurve(output_dir: str | Path, targetid) -> pd.DataFrame:
    """One target's rows (empty when it was never measured), sorted by mjd then wavelength."""
    return read_lightcurves(output_dir, [targetid])
