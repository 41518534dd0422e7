"""A version's metadata: the id index and the HATS metadata (hats' own writers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hats
import numpy as np
import pandas as pd
import pyarrow as pa
from hats.catalog import PartitionInfo, TableProperties
from hats.io.skymap import write_skymap
from hats.pixel_math import HealpixPixel

from .. import __version__
from .._io import write_parquet_atomic
from .nested import HEALPIX_29
from .plan import HIGHEST_ORDER
from .versions import ID_INDEX, main_catalog

SKYMAP_ORDER = 7
#: The HATS properties naming the position columns, shared by the catalog and its margin.
SPATIAL_COLUMNS = {"ra_column": "ra", "dec_column": "dec", "healpix_column": HEALPIX_29, "healpix_order": 29}


def write_index(version: Path, previous: Path | None, kept: list[HealpixPixel], results: list[dict],
                targetid_type: pa.DataType) -> None:
    """``targetid_index.parquet``: per source its partition and row, sorted by targetid (the
    ``kept`` partitions' entries from the ``previous`` version, the written ones' from ``results``)."""
    frames = []
    if kept and previous is not None:
        old = pd.read_parquet(previous / ID_INDEX)
        still = pd.MultiIndex.from_frame(old[["norder", "npix"]]).isin([(p.order, p.pixel) for p in kept])
        frames.append(old[still])
    for r in results:
        frames.append(pd.DataFrame({"targetid": r["targetid"], "norder": np.int8(r["norder"]),
                                    "npix": np.int64(r["npix"]), "row": np.arange(len(r["targetid"]), dtype=np.int64)}))
    index = pd.concat(frames, ignore_index=True).sort_values("targetid", ignore_index=True)
    table = pa.Table.from_pandas(index, preserve_index=False)
    table = table.set_column(0, pa.field("targetid", targetid_type), table.column(0).cast(targetid_type))
    write_parquet_atomic(table, version / ID_INDEX, row_group_size=65_536)


def write_hats_metadata(version: Path, pixels: list[HealpixPixel], hist: pd.DataFrame, sources: pd.Series) -> None:
    """The HATS metadata of a version's catalog, with hats' own writers: ``_metadata`` /
    ``_common_metadata``, ``partition_info.csv``, the skymap and ``properties`` (``sources``:
    per partition)."""
    version = main_catalog(version)
    hats.io.write_parquet_metadata(version)
    PartitionInfo.from_healpix(pixels).write_to_file(catalog_path=version)
    skymap = np.bincount(hist["pixel"].to_numpy() >> 2 * (HIGHEST_ORDER - SKYMAP_ORDER),
                         weights=hist["count"].to_numpy(), minlength=12 * 4**SKYMAP_ORDER).astype(np.int64)
    write_skymap(skymap, version)
    properties: dict[str, Any] = {
        "catalog_name": "spxdask_lightcurves", "catalog_type": "object", "total_rows": int(sources.sum()),
        **SPATIAL_COLUMNS, "skymap_order": SKYMAP_ORDER, "hats_max_rows": int(sources.max()),
        "hats_order": max((p.order for p in pixels), default=0),
        "moc_sky_fraction": PartitionInfo.from_healpix(pixels).calculate_fractional_coverage(),
        "hats_builder": f"spxdask v{__version__}"}
    TableProperties(**properties).to_properties_file(version)
