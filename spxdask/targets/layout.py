"""A flat catalog file laid out as a HATS catalog, once, in pieces: every row goes to the
HEALPix pixel (one order, chosen from the row count) holding it, and each pixel becomes one
file sorted by ``_healpix_29``, with hats' metadata, so photometry tasks read the pixels their
images touch and LSDB opens the layout as any HATS catalog. No step holds more than a piece of
the file or one pixel's rows."""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hats
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from hats.catalog import PartitionInfo, TableProperties
from hats.io import paths
from hats.pixel_math import HealpixPixel
from hats.pixel_math.spatial_index import compute_spatial_index

from .. import __version__
from ..catalog.metadata import SPATIAL_COLUMNS
from ..catalog.nested import HEALPIX_29
from .check import CatalogError

#: Rows per pixel the order is chosen for (a pixel file is one task's read at most a few times over).
ROWS_PER_PIXEL = 100_000
MAX_ORDER = 7
#: Pixels are split no finer than this (3.4 arcmin).
MAX_SPLIT_ORDER = 10
#: The first pass writes pixels no finer than this (768: one open file each, under the usual
#: limit of 1,024); finer ones come from splitting them.
FIRST_PASS_ORDER = 3
#: Rows the first pass may hold back to write in fuller row groups, over all its pixels.
BUFFERED_ROWS = 4_000_000
_PIXEL = "_npix"


def layout_order(rows: int) -> int:
    """The lowest order whose pixels hold at most :data:`ROWS_PER_PIXEL` rows on average."""
    order = 0
    while order < MAX_ORDER and rows > ROWS_PER_PIXEL * 12 * 4**order:
        order += 1
    return order


def write_layout(frames: Iterable[pd.DataFrame], root: Path, order: int, *, name: str, where: str) -> int:
    """Write the rows of ``frames`` (targetid?, ra, dec, carried columns) as a HATS catalog at
    ``root`` (atomically: it appears whole or not at all); its row count.

    Raises
    ------
    CatalogError
        For no rows, pieces whose columns do not agree, or an id listed twice in a pixel.
    """
    partial = root.with_name(f"{root.name}.partial-{uuid.uuid4().hex[:8]}")
    scratch = partial / "_pieces"
    try:
        batches = (_with_pixels(frame) for frame in frames if len(frame))
        first = next(batches, None)
        if first is None:
            raise CatalogError(f"{where}: catalog has no rows")
        schema = first.schema

        def agreeing() -> Iterable[pa.RecordBatch]:
            for batch in itertools.chain([first], batches):
                try:
                    yield batch.cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise CatalogError(f"{where}: a column changes type part way through ({exc})") from exc

        first_order = min(order, FIRST_PASS_ORDER)  # finer pixels come from splitting the full ones
        _split(agreeing(), scratch, schema, first_order)
        pixels: list[HealpixPixel] = []
        rows = 0
        for folder, pixel in _pixel_folders(scratch, first_order):
            rows += _settle(folder, pixel, schema, partial, pixels, where)
        scratch.rmdir()
        pixels.sort()
        hats.io.write_parquet_metadata(partial)
        PartitionInfo.from_healpix(pixels).write_to_file(catalog_path=partial)
        properties: dict[str, Any] = {"catalog_name": name, "catalog_type": "object", "total_rows": rows,
                                      **SPATIAL_COLUMNS, "hats_order": max(p.order for p in pixels),
                                      "hats_builder": f"spxdask v{__version__}"}
        TableProperties(**properties).to_properties_file(partial)
        partial.rename(root)
        return rows
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _split(batches: Iterable[pa.RecordBatch], folder: Path, schema: pa.Schema, order: int) -> None:
    """Stream ``batches`` into one sub-folder per pixel of ``order``."""
    def tagged() -> Iterable[pa.RecordBatch]:
        for batch in batches:
            pixel = batch.column(HEALPIX_29).to_numpy() >> 2 * (29 - order)
            yield batch.append_column(_PIXEL, pa.array(pixel, pa.int64()))

    # no dictionaries: each of the hundreds of open files would grow its own, up to 1 MB a column
    options = pads.ParquetFileFormat().make_write_options(use_dictionary=False)
    pads.write_dataset(tagged(), folder, schema=schema.append(pa.field(_PIXEL, pa.int64())), format="parquet",
                       file_options=options,
                       min_rows_per_group=max(1, min(16_384, BUFFERED_ROWS // (12 * 4**order))),
                       max_rows_per_group=1 << 20, max_partitions=12 * 4**order,
                       partitioning=pads.partitioning(pa.schema([(_PIXEL, pa.int64())]), flavor="hive"))


def _pixel_folders(folder: Path, order: int) -> list[tuple[Path, HealpixPixel]]:
    found = [(f, HealpixPixel(order, int(f.name.split("=")[1]))) for f in folder.iterdir() if f.name.startswith(_PIXEL)]
    return sorted(found, key=lambda item: item[1].pixel)


def _settle(folder: Path, pixel: HealpixPixel, schema: pa.Schema, root: Path, pixels: list[HealpixPixel],
            where: str) -> int:
    """Write the rows in ``folder`` as ``pixel``'s file, or, when they are more than
    :data:`ROWS_PER_PIXEL`, split them (streamed) among its four children, in turn; the rows
    written. Dense regions get small pixels; no step reads more than one pixel's rows."""
    dataset = pads.dataset(folder, format="parquet", partitioning=None, schema=schema)
    if dataset.count_rows() > ROWS_PER_PIXEL and pixel.order < MAX_SPLIT_ORDER:
        children = folder.with_name(folder.name + "-split")
        _split(dataset.to_batches(), children, schema, pixel.order + 1)
        shutil.rmtree(folder)
        rows = sum(_settle(f, p, schema, root, pixels, where) for f, p in _pixel_folders(children, pixel.order + 1))
        children.rmdir()
        return rows
    table = dataset.to_table().sort_by(HEALPIX_29)
    _no_repeats(table, pixel, where)
    target = Path(str(paths.pixel_catalog_file(root, pixel)))
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)
    pixels.append(pixel)
    shutil.rmtree(folder)
    return table.num_rows


def _with_pixels(frame: pd.DataFrame) -> pa.RecordBatch:
    index = compute_spatial_index(frame["ra"].to_numpy(), frame["dec"].to_numpy())
    return pa.RecordBatch.from_pandas(frame.assign(**{HEALPIX_29: index}), preserve_index=False)


def _no_repeats(table: pa.Table, pixel: HealpixPixel, where: str) -> None:
    """An id listed twice within a pixel (pieces are checked alone; a repeated row lands in one pixel)."""
    if "targetid" not in table.column_names:
        return
    ids = table.column("targetid").to_pandas()
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise CatalogError(f"{where}: duplicate targetid {', '.join(map(str, repeated.unique()[:10]))}")
