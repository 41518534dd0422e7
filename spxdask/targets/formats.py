"""Flat catalog files read in pieces: CSV, Parquet (a file or a folder of files), FITS binary
table, VOTable. Each reader yields (rows, number of the first row) with the columns asked for;
none holds more than one piece (a VOTable, XML, is parsed whole)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from .check import CatalogError

#: Rows per piece.
PIECE_ROWS = 1_000_000
ACCEPTED = ("CSV, Parquet (a file or a folder of files), FITS binary table, VOTable, "
            "or a HATS catalog or collection (a folder, as lsdb.open_catalog takes)")


def kind_of(path: Path) -> str:
    """``"csv"``, ``"parquet"``, ``"fits"`` or ``"votable"``, from the name, else the first bytes.

    Raises
    ------
    CatalogError
        For a file of none of these formats, naming it and the accepted ones.
    """
    if path.is_dir():
        if any(path.rglob("*.parquet")):
            return "parquet"
        raise CatalogError(f"{path}: a folder that is neither a HATS catalog nor Parquet files; accepted: {ACCEPTED}")
    if path.stat().st_size == 0:
        raise CatalogError(f"{path}: catalog file is empty")
    name = path.name.lower().removesuffix(".gz")
    for suffixes, kind in (((".csv", ".tsv", ".txt"), "csv"), ((".parquet", ".pq"), "parquet"),
                           ((".fits", ".fit", ".fts"), "fits"), ((".xml", ".vot", ".votable"), "votable")):
        if name.endswith(suffixes):
            return kind
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if b"<VOTABLE" in head or head.lstrip().startswith(b"<?xml"):
        return "votable"
    try:
        if "," in head.decode("utf-8").splitlines()[0]:
            return "csv"
    except (UnicodeDecodeError, IndexError):
        pass
    raise CatalogError(f"{path}: not a catalog format spxdask reads; accepted: {ACCEPTED}")


def column_names(path: Path, kind: str) -> list[str]:
    """The file's column names."""
    if kind == "csv":
        return _csv_header(path)
    if kind == "parquet":
        return list(pads.dataset(path, format="parquet").schema.names)
    if kind == "fits":
        with _fits_table(path) as data:
            return list(data.columns.names)
    return list(_votable(path).colnames)


def pieces(path: Path, kind: str, columns: Sequence[str]) -> Iterator[tuple[pd.DataFrame, int]]:
    """The file's rows, ``columns`` only, a piece at a time with the number of its first row
    (a CSV's file line, the header being line 1; else from 0)."""
    if kind == "csv":
        yield from _csv_pieces(path, columns)
    elif kind == "parquet":
        first = 0
        scan = pads.dataset(path, format="parquet").to_batches(columns=list(columns), batch_size=PIECE_ROWS,
                                                               batch_readahead=1, fragment_readahead=1)
        for batch in scan:  # read ahead by one piece only: memory stays a few pieces
            yield batch.to_pandas(), first
            first += batch.num_rows
    elif kind == "fits":
        with _fits_table(path) as data:
            for start in range(0, len(data), PIECE_ROWS):
                part = data[start:start + PIECE_ROWS]
                yield pd.DataFrame({c: _native(part[c]) for c in columns}), start
    else:
        table = _votable(path)
        yield pd.DataFrame({c: _native(np.ma.filled(table[c], np.nan) if table[c].dtype.kind == "f"
                                       else np.asarray(table[c])) for c in columns}), 0


def estimate_rows(path: Path, kind: str) -> int:
    """The file's rows: exact for Parquet and FITS, from the size and the first lines for a CSV."""
    if kind == "parquet":
        return int(pads.dataset(path, format="parquet").count_rows())
    if kind == "fits":
        with _fits_table(path) as data:
            return len(data)
    if kind == "votable":
        return len(_votable(path))
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    lines = max(1, head.count(b"\n"))
    return int(path.stat().st_size / (len(head) / lines))


def _native(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind in "SU":
        return np.char.decode(values) if values.dtype.kind == "S" else values
    return values.astype(values.dtype.newbyteorder("=")) if values.dtype.byteorder not in "=|" else values


def _csv_header(path: Path) -> list[str]:
    with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)) as reader:
        return list(reader.schema.names)


def _csv_pieces(path: Path, columns: Sequence[str]) -> Iterator[tuple[pd.DataFrame, int]]:
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, include_columns=list(columns),
                                   strings_can_be_null=False)
    first = 2
    with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=64 << 20), convert_options=convert) as reader:
        for batch in reader:
            yield batch.to_pandas(), first
            first += batch.num_rows


@contextlib.contextmanager
def _fits_table(path: Path) -> Iterator:
    """The first binary table's rows (memory-mapped) while the file is open."""
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdus:
        table = next((hdu for hdu in hdus if isinstance(hdu, fits.BinTableHDU)), None)
        if table is None:
            raise CatalogError(f"{path}: a FITS file without a binary table")
        yield table.data


def _votable(path: Path):
    from astropy.io.votable import parse_single_table

    return parse_single_table(str(path)).to_table()
