"""The catalog stage's task bodies: plain functions of paths and records, no Dask.

:func:`histogram` counts one per-image file's rows per fine pixel; :func:`split` writes the
rows of one file that fall in the partitions being written as one shard per partition (each
file read once); :func:`write_partition` gathers a partition's shards, computes the spectra
and summaries of its sources (:func:`~spxdask.spectra.compute.spectra_of`) and writes the
partition (:mod:`.nested`) and its flat spectra. Memory per task: one partition or one file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq
from hats.pixel_math import HealpixPixel
from hats.pixel_math.spatial_index import compute_spatial_index

from .. import per_image
from .._io import coded_columns, write_parquet_atomic
from ..spectra import SpectraConfig
from ..spectra.binning import UNITS as SPECTRUM_UNITS
from ..spectra.compute import INPUT_COLUMNS, spectra_of
from .nested import LIGHTCURVE, SORT_KEYS, SOURCES_PER_ROW_GROUP, keys, nest, unnest
from .plan import fine_pixels, pixel_range
from .versions import partition_path, spectra_path


def histogram(path: str) -> tuple[str, np.ndarray, np.ndarray]:
    """One per-image file's rows per fine pixel: (file name, pixels, counts)."""
    table = per_image.read(path, columns=["ra", "dec"])
    return (Path(path).name, *fine_pixels(table.column("ra").to_numpy(), table.column("dec").to_numpy()))


def shard_folder(shards: str | Path, pixel: HealpixPixel) -> Path:
    """The folder of one partition's shards."""
    return Path(shards) / f"{pixel.order}-{pixel.pixel}"


def split(path: str, pixels: list[HealpixPixel], shards: str) -> int:
    """Write the rows of one per-image file that fall in ``pixels`` (the partitions being
    written; sorted, disjoint) as one shard per partition, ``<shards>/<order>-<pixel>/<file>``;
    the rows written. Each file is read once, whatever the number of partitions it meets."""
    table = per_image.read(path)
    hp29 = compute_spatial_index(table.column("ra").to_numpy(), table.column("dec").to_numpy())
    ranges = np.array([pixel_range(p, 29) for p in pixels])
    k = np.searchsorted(ranges[:, 0], hp29, side="right") - 1
    inside = np.flatnonzero((k >= 0) & (hp29 < ranges[np.maximum(k, 0), 1]))
    order = inside[np.argsort(k[inside], kind="stable")]
    table, k = table.take(order), k[order]
    bounds = np.searchsorted(k, np.arange(len(pixels) + 1))
    for j in np.flatnonzero(np.diff(bounds)):  # shards are transient: uncompressed Arrow, fast both ways
        shard = shard_folder(shards, pixels[j]) / f"{Path(path).stem}.arrow"
        feather.write_feather(table.slice(bounds[j], bounds[j + 1] - bounds[j]), shard, compression="uncompressed")
    return table.num_rows


def spectra_inputs(config: SpectraConfig) -> list[str]:
    """The light-curve columns the spectra of ``config`` (its flux column resolved) read."""
    return [*INPUT_COLUMNS, config.flux_column, f"{config.flux_column}_error"]


def write_partition(pixel: HealpixPixel, shards: str, version: str, spectra: SpectraConfig | None,
                    targetid_type: pa.DataType, base: str | None, *split_rows: int) -> dict:
    """Gather the rows of ``pixel`` from its shards (``split_rows``: the splits that wrote them)
    and, when it only gained files, from its ``base`` partition of the previous version; write
    its partition (and flat spectra); its counts and the targetids in stored order."""
    folder = shard_folder(shards, pixel)
    parts = [feather.read_table(f) for f in sorted(folder.iterdir())]
    if base is not None:
        earlier = unnest(pq.read_table(base, columns=[*keys(LIGHTCURVE), LIGHTCURVE]), LIGHTCURVE)
        parts.insert(0, earlier.cast(parts[0].schema) if parts else earlier)
    rows = pa.concat_tables(parts)
    rows = rows.take(pc.sort_indices(rows, [(k, "ascending") for k in SORT_KEYS]))  # stays in Arrow: text too
    if spectra is not None:
        per_channel, sources = spectra_of(rows.select(spectra_inputs(spectra)).to_pandas(), spectra)
    else:
        ids = rows.column("targetid").to_numpy()
        first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        sources = pd.DataFrame({"targetid": ids[first], "ra": rows.column("ra").to_numpy()[first],
                                "dec": rows.column("dec").to_numpy()[first],
                                "n_obs": np.diff(np.r_[first, ids.size]).astype(np.int32)})
        per_channel = None
    healpix = compute_spatial_index(sources["ra"].to_numpy(), sources["dec"].to_numpy())
    table = nest(rows, sources, per_channel, healpix, targetid_type)
    out = partition_path(Path(version), pixel)
    write_parquet_atomic(table, out, row_group_size=SOURCES_PER_ROW_GROUP, use_dictionary=coded_columns(table.schema))
    if per_channel is not None:
        flat = pa.Table.from_pandas(per_channel, preserve_index=False)
        schema = pa.schema([pa.field(f.name, targetid_type if f.name == "targetid" else f.type,
                                     metadata={"unit": SPECTRUM_UNITS[f.name]} if f.name in SPECTRUM_UNITS else None)
                            for f in flat.schema], metadata={"spxdask.units": json.dumps(SPECTRUM_UNITS)})
        write_parquet_atomic(flat.cast(schema), spectra_path(Path(version), pixel), use_dictionary=coded_columns(schema))
    releases = rows.group_by("targetid").aggregate([("release", "count_distinct")]).column(1)
    mixed = int(pc.sum(pc.greater(releases, 1)).as_py() or 0)
    shutil.rmtree(folder)
    return {"norder": pixel.order, "npix": pixel.pixel, "n_sources": len(sources), "n_rows": rows.num_rows,
            "n_spectrum_rows": 0 if per_channel is None else len(per_channel),
            "n_variable": int(sources["variable"].sum()) if "variable" in sources else 0, "n_mixed": mixed,
            "targetid": sources["targetid"].to_numpy()}
