"""The catalog's margin cache, and the collection that ties it to the catalog.

A source near a partition's edge has cross-match partners in the next partition; LSDB finds
them only with a margin cache: per partition, the rows of the other partitions within a few
arcseconds of its edge. As in LSDB's and hats-import's margin generation, "within" is taken
at the HEALPix order whose pixels are just wider than the threshold (:func:`margin_order`):
the rows whose pixel at that order borders the partition (a superset of the exact margin, which
LSDB's cross-match filters by distance).

A version folder is a HATS collection (``collection.properties``): the catalog under
:data:`MAIN`, its margin under :data:`MARGIN`, so ``lsdb.open_catalog(run / "catalog")`` loads
both and cross-matches are complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hats.catalog import PartitionInfo, TableProperties
from hats.catalog.dataset.collection_properties import CollectionProperties
from hats.io import paths, write_parquet_metadata
from hats.pixel_math import HealpixPixel
from hats.pixel_math.healpix_shim import margin2order, order2mindist
from hats.pixel_math.pixel_margins import get_margin

from .._io import write_parquet_atomic
from .metadata import SPATIAL_COLUMNS
from .nested import HEALPIX_29
from .versions import MAIN

#: The margin's width (arcsec): cross-match radii up to this find every partner.
THRESHOLD_ARCSEC = 10.0
#: The margin catalog's folder in a version.
MARGIN = f"{MAIN}_{THRESHOLD_ARCSEC:g}arcs"


def margin_order(pixels: list[HealpixPixel], threshold_arcsec: float = THRESHOLD_ARCSEC) -> int:
    """The order whose pixels are at least ``threshold_arcsec`` wide, and finer than every
    partition."""
    order = int(margin2order(np.asarray(threshold_arcsec / 60.0)))
    return max(order, max(p.order for p in pixels) + 1)


def neighbours(pixels: list[HealpixPixel], order: int) -> dict[HealpixPixel, list[HealpixPixel]]:
    """Per partition, the other partitions holding any of its margin pixels at ``order``."""
    by_order: dict[int, set[int]] = {}
    for p in pixels:
        by_order.setdefault(p.order, set()).add(p.pixel)
    out = {}
    for p in pixels:
        near = set()
        for m in get_margin(p.order, p.pixel, order - p.order):
            for o, members in by_order.items():
                if (m >> 2 * (order - o)) in members:
                    near.add(HealpixPixel(o, m >> 2 * (order - o)))
        near.discard(p)
        out[p] = sorted(near)
    return out


def partition_path(version: Path, pixel: HealpixPixel) -> Path:
    """The margin file of one partition in a version (hats' layout)."""
    return Path(str(paths.pixel_catalog_file(version / MARGIN, pixel)))


def write_partition(pixel: HealpixPixel, schema_from: str, near: list[str], order: int, path: str) -> int:
    """Write ``pixel``'s margin: the rows of the partition files ``near`` whose pixel at
    ``order`` borders it (an empty file of ``schema_from``'s schema when none); its row count."""
    border = np.asarray(get_margin(pixel.order, pixel.pixel, order - pixel.order), np.int64)
    pieces = []
    for file in near:
        table = pq.read_table(file)
        at = table.column(HEALPIX_29).to_numpy() >> 2 * (29 - order)
        keep = np.isin(at, border)
        if keep.any():
            pieces.append(table.filter(pa.array(keep)))
    schema = pq.read_schema(schema_from)
    table = pa.concat_tables(pieces).cast(schema) if pieces else schema.empty_table()
    write_parquet_atomic(table, path)
    return table.num_rows


def write_metadata(margin_dir: Path, pixels: list[HealpixPixel], rows: int, order: int) -> None:
    """The margin catalog's HATS metadata (hats' own writers)."""
    write_parquet_metadata(margin_dir)
    PartitionInfo.from_healpix(pixels).write_to_file(catalog_path=margin_dir)
    properties: dict[str, Any] = {
        "catalog_name": MARGIN, "catalog_type": "margin", "total_rows": rows, **SPATIAL_COLUMNS, "primary_catalog": MAIN,
        "margin_threshold": float(order2mindist(order) * 60.0)}
    TableProperties(**properties).to_properties_file(margin_dir)


def write_collection(root: Path) -> None:
    """``collection.properties``: the catalog and its margin, as one HATS collection."""
    properties: dict[str, Any] = {"obs_collection": "spxdask_run", "hats_primary_table_url": MAIN,
                                  "all_margins": [MARGIN], "default_margin": MARGIN}
    CollectionProperties(**properties).to_properties_file(root)
