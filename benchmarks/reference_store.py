"""The light-curve store spxdask built before the HATS catalog (kept here as the catalog's
baseline): the per-image files read in 64 MiB batches, a shuffle on targetid (P2P on the
cluster) into range partitions of ~500,000 rows, each sorted by (targetid, mjd, wavelength)."""

from __future__ import annotations

from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

SORT_KEYS = ["targetid", "mjd", "wavelength"]
INPUT_BYTES = 64 * 2**20
PARTITION_ROWS = 500_000


def _read(paths: list[str]) -> pd.DataFrame:
    return pa.concat_tables([pq.read_table(p) for p in paths]).to_pandas()


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index().sort_values(SORT_KEYS, kind="stable", ignore_index=True)


def targetid_store(per_image: Path, out: Path, client) -> int:
    """Shuffle the per-image files on targetid into ``out``; the number of targets."""
    ids = ds.dataset(per_image, format="parquet").to_table(columns=["targetid"]).column("targetid")
    unique = np.sort(pa.compute.unique(ids).to_numpy(zero_copy_only=False))
    n = max(1, -(-len(ids) // PARTITION_ROWS))
    divisions = [int(unique[i]) for i in np.unique(np.linspace(0, unique.size - 1, n + 1).round().astype(int))]
    files = sorted(per_image.glob("*.parquet"))
    batches: list[list[str]] = [[]]
    size = 0
    for f in files:
        if batches[-1] and size + f.stat().st_size > INPUT_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(str(f))
        size += f.stat().st_size
    meta = pq.read_schema(files[0]).empty_table().to_pandas()
    frame = dd.from_map(_read, batches, meta=meta, enforce_metadata=False)
    frame = frame.set_index("targetid", divisions=divisions, shuffle_method="p2p")
    frame = frame.map_partitions(_sort, meta=_sort(frame._meta))
    client.compute(frame.to_parquet(str(out), write_index=False, write_metadata_file=False, compute=False)).result()
    return int(unique.size)
