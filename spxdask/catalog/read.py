"""A few sources from the catalog, fast: the id index (sorted by targetid, its row groups'
statistics skip all but one) names each source's partition and row; one row group of that
partition is read (pyarrow, no Dask)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hats.pixel_math import HealpixPixel

from .build import ID_INDEX, _partition_path, current_version, partition_files
from .nested import SOURCES_PER_ROW_GROUP, SPECTRUM, flatten, keys


def _ids(index_path: Path, targetids: Sequence) -> list:
    """``targetids`` as the catalog's targetid type (integers stay integers, never floats)."""
    kind = pq.read_schema(index_path).field("targetid").type
    ids = list(targetids)
    if pa.types.is_integer(kind):
        try:
            return [int(t) for t in ids]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"targetids in {index_path.parent} are integers; got {ids!r}") from exc
    return [str(t) for t in ids]


def read_nested(catalog_dir: str | Path, targetids: Sequence, column: str) -> pd.DataFrame:
    """The rows of nested ``column`` (``lightcurve`` or ``spectrum``) of the given sources, in
    stored order (the light curves: targetid, ra, dec and the per-image columns).

    Raises
    ------
    FileNotFoundError
        When there is no catalog yet.
    """
    version = current_version(Path(catalog_dir))
    if version is None:
        raise FileNotFoundError(f"no catalog in {catalog_dir}: run the batch pipeline (its catalog stage) first")
    ids = _ids(version / ID_INDEX, targetids)
    where = pq.read_table(version / ID_INDEX, filters=[("targetid", "in", ids)]) if ids else None
    frames = []
    if where is not None and where.num_rows:
        located = where.to_pandas()
        for (order, npix), rows in located.groupby(["norder", "npix"]):
            part = pq.ParquetFile(_partition_path(version, HealpixPixel(int(order), int(npix))))
            groups = sorted(set((rows["row"] // SOURCES_PER_ROW_GROUP).tolist()))
            table = part.read_row_groups(groups, columns=[*keys(column), column])
            frames.append(flatten(table.filter(pc.is_in(table["targetid"], value_set=pa.array(ids))), column))
    if frames:
        return pd.concat(frames, ignore_index=True)
    schema = pq.read_schema(partition_files(version)[0])
    return flatten(schema.empty_table().select([*keys(column), column]), column)


def read_spectra(output_dir: str | Path, targetids: Sequence) -> pd.DataFrame:
    """Channel spectra of the given targets (:data:`~spxdask.spectra.binning.SPECTRUM_COLUMNS`),
    sorted by targetid then wavelength, from the run's catalog."""
    rows = read_nested(Path(output_dir) / "catalog", targetids, SPECTRUM)
    return rows.sort_values(["targetid", "wavelength"], kind="stable", ignore_index=True)


def read_spectrum(output_dir: str | Path, targetid) -> pd.DataFrame:
    """One target's channel spectrum (one row per channel with measurements, by wavelength;
    empty when it has none)."""
    return read_spectra(output_dir, [targetid])
