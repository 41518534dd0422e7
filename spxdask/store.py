"""Parquet stores sorted by ``targetid``: the light curves and the channel spectra.

A store is a folder of ``part.<i>.parquet`` files whose rows are sorted by targetid (and then
by the store's own keys), partitioned by targetid range, plus ``_targetid_index.parquet``: per
row group its file, number, targetid min / max and row count. A read of a few targets opens
only the row groups whose range can hold them. Stores are built under a temporary name and
swapped in whole, so a reader never sees a half-written store.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._io import write_parquet_atomic

INDEX_NAME = "_targetid_index.parquet"
#: The JSON file in which a store records what it was built from.
PROVENANCE = "_provenance.json"


def parts(store: Path) -> list[Path]:
    """The store's data files in partition (= targetid) order."""
    return sorted(Path(store).glob("part.*.parquet"), key=lambda p: int(p.stem.split(".")[1]))


def write_index(store: Path) -> pd.DataFrame:
    """Write ``_targetid_index.parquet`` from the row-group statistics of the store's parts."""
    rows = []
    for path in parts(store):
        meta = pq.ParquetFile(path).metadata
        col = meta.schema.names.index("targetid")
        for rg in range(meta.num_row_groups):
            if meta.row_group(rg).num_rows == 0:
                continue
            stats = meta.row_group(rg).column(col).statistics
            rows.append({"file": path.name, "row_group": rg, "targetid_min": stats.min,
                         "targetid_max": stats.max, "num_rows": meta.row_group(rg).num_rows})
    index = pd.DataFrame(rows, columns=["file", "row_group", "targetid_min", "targetid_max", "num_rows"])
    write_parquet_atomic(index, Path(store) / INDEX_NAME)
    return index


def temporary_beside(final: Path) -> Path:
    """A fresh hidden folder name beside ``final`` to build a store in."""
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")


def swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` (two renames; the old store is removed afterwards)."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _coerce(store: Path, targetids: Iterable) -> list:
    kind = pq.read_schema(parts(store)[0]).field("targetid").type
    ids = list(targetids)
    if pa.types.is_integer(kind):
        try:
            return [int(t) for t in ids]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"targetids in {store} are integers; got {ids!r}") from exc
    return [str(t) for t in ids]


def read_targets(store: Path, targetids: Sequence, sort_keys: list[str], *, what: str, stage: str) -> pd.DataFrame:
    """Rows of the given targets sorted by ``sort_keys``, reading only the row groups whose
    targetid range can hold them. ``what`` and ``stage`` name the store and the stage that
    builds it in the error raised when there is none."""
    store = Path(store)
    if not (store / INDEX_NAME).exists():
        raise FileNotFoundError(f"no {what} in {store}: run the {stage} stage first")
    ids = _coerce(store, targetids)
    index = pd.read_parquet(store / INDEX_NAME)
    lo, hi = index["targetid_min"].to_numpy(), index["targetid_max"].to_numpy()
    hit = np.zeros(len(index), bool)
    for t in ids:
        hit |= (lo <= t) & (hi >= t)
    wanted = pa.array(ids)
    frames = []
    for file, group in index.loc[hit, ["file", "row_group"]].itertuples(index=False):
        table = pq.ParquetFile(store / file).read_row_group(int(group))
        frames.append(table.filter(pc.is_in(table["targetid"], value_set=wanted)).to_pandas())
    if not frames:
        return pq.read_schema(parts(store)[0]).empty_table().to_pandas()
    return pd.concat(frames, ignore_index=True).sort_values(sort_keys, kind="stable", ignore_index=True)
