"""One catalog partition as an Arrow table: a row per source, its light curve and spectrum as
nested columns in nested-pandas' layout (a struct of equal-length lists per row), and back
(pyarrow / pandas, no Dask)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: the nested columns
LIGHTCURVE, SPECTRUM = "lightcurve", "spectrum"
HEALPIX_29 = "_healpix_29"
#: the order of the light-curve rows within a partition
SORT_KEYS = ["targetid", "mjd", "wavelength"]
#: sources per Parquet row group of a partition: a one-source read opens one group
SOURCES_PER_ROW_GROUP = 250


def _nested(rows: pa.Table, starts: np.ndarray) -> pa.StructArray:
    """A struct of lists: element i holds ``rows[starts[i]:starts[i + 1]]`` of every column."""
    offsets = pa.array(starts, pa.int32())
    return pa.StructArray.from_arrays([pa.ListArray.from_arrays(offsets, col.combine_chunks()) for col in rows.columns],
                                      names=rows.column_names)


def _starts(keys: np.ndarray, targetids: np.ndarray) -> np.ndarray:
    """Offsets of each target's run in ``keys`` (sorted; targets without rows get empty runs)."""
    return np.append(np.searchsorted(keys, targetids, side="left"), len(keys))


def nest(rows: pa.Table, sources: pd.DataFrame, spectra: pd.DataFrame | None, healpix: np.ndarray,
         targetid_type: pa.DataType) -> pa.Table:
    """The partition table of the sources in ``sources`` (sorted by targetid; their summary
    columns become the base columns, beside ``healpix`` = their ``_healpix_29``), with the
    light-curve ``rows`` (sorted by targetid, then their own keys) nested as ``lightcurve``
    (every column but targetid, ra, dec) and the channel ``spectra`` (sorted by targetid) as
    ``spectrum`` (every column but targetid)."""
    ids = sources["targetid"].to_numpy()
    base = pa.Table.from_pandas(sources.drop(columns="targetid"), preserve_index=False)
    table = base.add_column(0, "targetid", pa.array(ids, targetid_type))
    table = table.add_column(3, HEALPIX_29, pa.array(np.asarray(healpix, np.int64)))
    flat = rows.drop_columns(["targetid", "ra", "dec"])
    table = table.append_column(LIGHTCURVE, _nested(flat, _starts(rows.column("targetid").to_numpy(), ids)))
    if spectra is not None:
        per_channel = pa.Table.from_pandas(spectra.drop(columns="targetid"), preserve_index=False)
        table = table.append_column(SPECTRUM, _nested(per_channel, _starts(spectra["targetid"].to_numpy(), ids)))
    return table


def keys(column: str) -> list[str]:
    """The base columns each row of nested ``column`` carries when unnested: its source's
    targetid, ra and dec (the spectrum: targetid only)."""
    return ["targetid", "ra", "dec"] if column == LIGHTCURVE else ["targetid"]


def unnest(table: pa.Table, column: str) -> pa.Table:
    """The rows of nested ``column`` with their :func:`keys`, in the stored order, as Arrow
    (``table`` holds the keys and the column)."""
    nested = table.column(column).combine_chunks()
    lists = [nested.field(i) for i in range(nested.type.num_fields)]
    parents = pc.list_parent_indices(lists[0])
    columns = {k: table.column(k).take(parents) for k in keys(column)}
    columns.update({nested.type.field(i).name: lists[i].flatten() for i in range(len(lists))})
    return pa.table(columns)


def flatten(table: pa.Table, column: str) -> pd.DataFrame:
    """:func:`unnest` as a DataFrame."""
    return unnest(table, column).to_pandas()
