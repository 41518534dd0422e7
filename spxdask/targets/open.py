"""An input catalog, whatever its form, opened for per-image reads (:func:`open_targets`), or
read whole (:func:`load_catalog`, :func:`load_neighbours`, the reference's functions)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from .. import per_image
from ..source import sources_frame
from . import formats
from .check import CatalogError, checked, id_kind
from .columns import CARRIED, Columns, resolve
from .layout import layout_order, write_layout
from .table import MemoryTargets, TargetTable

#: Bumped when :mod:`.layout` writes differently: older cached layouts are rebuilt.
LAYOUT_VERSION = 1
HATS_MARKERS = ("hats.properties", "properties", "collection.properties")
#: A flat file of more rows than this is laid out in a child process: the caller's process (a
#: notebook's, often with a LocalCluster's scheduler in it) keeps none of the memory the layout
#: used (Arrow's and the C library's allocators keep what they free). Smaller files are laid out
#: in place, sparing the child's start (~2 s).
CHILD_PROCESS_ROWS = 1_000_000


def open_targets(catalog: Any, *, cache: Path, role: str = "targets", id_column: str | None = None,
                 ra_column: str | None = None, dec_column: str | None = None,
                 storage_options: dict | None = None) -> TargetTable | MemoryTargets:
    """The catalog, ready for per-image reads.

    Parameters
    ----------
    catalog : path, URL, lsdb.Catalog, DataFrame or list of Source
        A HATS catalog or collection (folder or URL) is read where it is. A flat file (CSV,
        Parquet file or folder, FITS binary table, VOTable) is checked and laid out once as a
        HATS catalog under ``cache``, reused while the file is unchanged. An ``lsdb.Catalog``
        is written there (its filters applied). Rows in memory stay in memory.
    cache : path
        The folder of the laid-out catalogs (a run's ``targets/``).
    role : {"targets", "neighbours"}
        Neighbours need no id column.
    id_column, ra_column, dec_column : str, optional
        The catalog's names of these columns (default: the usual names, see
        :func:`~spxdask.targets.resolve`).
    storage_options : dict, optional
        fsspec options for a remote HATS catalog.

    Returns
    -------
    TargetTable or MemoryTargets

    Raises
    ------
    CatalogError
        For a catalog that is missing, of no accepted format, or whose columns or rows are
        unusable: one line naming the file (and the rows).
    """
    need_id = role == "targets"
    names = dict(id_column=id_column, ra_column=ra_column, dec_column=dec_column, need_id=need_id)
    if isinstance(catalog, pd.DataFrame) or (isinstance(catalog, Sequence) and not isinstance(catalog, str)):
        frame = sources_frame(catalog) if need_id else _positions(catalog)
        if isinstance(catalog, pd.DataFrame):  # with their motions and shapes
            lower = catalog.rename(columns=str.lower).reset_index(drop=True)
            frame = frame.assign(**{c: lower[c] for c in CARRIED if c in lower and c not in frame})
        return MemoryTargets(frame)
    if type(catalog).__module__.startswith("lsdb"):
        return _open_lsdb(catalog, Path(cache), role, names)
    text = str(catalog)
    if "://" in text:
        return _open_hats(text, names, storage_options)
    path = _existing(catalog, role)
    if path.is_dir() and any((path / m).exists() for m in HATS_MARKERS):
        return _open_hats(str(path), names, None)
    return _open_flat(path, Path(cache), role, names)


def _existing(path: str | Path, role: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CatalogError(f"{path}: {'catalog' if role == 'targets' else 'neighbour catalog'} not found")
    return path


def _positions(rows: Any) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        frame = rows.rename(columns=str.lower)
        missing = {"ra", "dec"} - set(frame.columns)
        if missing:
            raise ValueError(f"neighbours lack column(s) {sorted(missing)}")
        return frame[["ra", "dec"]].reset_index(drop=True)
    return pd.DataFrame({"ra": [s.ra for s in rows], "dec": [s.dec for s in rows]})


def _open_hats(url: str, names: dict, storage_options: dict | None) -> TargetTable:
    import hats

    catalog: Any
    try:
        catalog = hats.read_hats(url, storage_options=storage_options)
    except Exception as exc:  # hats raises many kinds for a folder it cannot read
        raise CatalogError(f"{url}: unreadable as a HATS catalog ({type(exc).__name__}: {exc})") from exc
    catalog = getattr(catalog, "main_catalog", catalog)  # a collection: its catalog
    info = catalog.catalog_info
    schema = catalog.schema
    columns = resolve(schema.names, url, preferred=(info.ra_column or "ra", info.dec_column or "dec"), **names)
    kind = None
    if columns.id is not None:
        kind = "int64" if pa.types.is_integer(schema.field(columns.id).type) else "string"
    return TargetTable(str(catalog.catalog_path), tuple((p.order, p.pixel) for p in catalog.get_healpix_pixels()),
                       columns, int(info.total_rows or 0), kind, npix_suffix=info.npix_suffix or ".parquet",
                       storage_options=storage_options)


def _flat(path: Path, names: dict) -> tuple[str, Columns]:
    """A flat file's format and which of its columns are used."""
    kind = formats.kind_of(path)
    return kind, resolve(_read(path, kind, lambda: formats.column_names(path, kind)), str(path), **names)


def _open_flat(path: Path, cache: Path, role: str, names: dict) -> TargetTable:
    kind, columns = _flat(path, names)
    stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in ([path] if path.is_file() else
                                                                      sorted(path.rglob("*.parquet")))]
    key = per_image.digest({"files": stamp, "columns": columns.__dict__, "layout": LAYOUT_VERSION})[:16]
    root = cache / f"{role}-{path.stem}-{key}"
    if not (root / "hats.properties").exists() and not (root / "properties").exists():
        cache.mkdir(parents=True, exist_ok=True)
        _lay_out(path, kind, columns, root, role)
        for stale in cache.glob(f"{role}-{path.stem}-*"):  # the layouts of the file's earlier states
            if stale != root and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    return _open_hats(str(root), {**names, "id_column": None, "ra_column": None, "dec_column": None}, None)


def _lay_out(path: Path, kind: str, columns: Columns, root: Path, role: str) -> None:
    """Lay the file out as a HATS catalog at ``root``: in this process, or, for more than
    :data:`CHILD_PROCESS_ROWS` rows, in a child (its :class:`CatalogError` raised here)."""
    rows = _read(path, kind, lambda: formats.estimate_rows(path, kind))
    job = {"path": str(path), "kind": kind, "columns": dataclasses.asdict(columns), "root": str(root),
           "order": layout_order(rows), "role": role}
    if rows <= CHILD_PROCESS_ROWS:
        _write_layout(job)
        return
    child = [sys.executable, "-c", "import sys; from spxdask.targets.open import _child; _child(sys.argv[1])"]
    done = subprocess.run([*child, json.dumps(job)], stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        if done.returncode == 2:
            raise CatalogError(last)
        raise RuntimeError(f"{path}: laying the catalog out failed in a child process: {last}")


def _write_layout(job: dict) -> None:
    path = Path(job["path"])
    columns = Columns(**{**job["columns"], "carried": tuple(job["columns"]["carried"])})
    write_layout(_checked_pieces(path, job["kind"], columns), Path(job["root"]), job["order"],
                 name=f"spxdask_{job['role']}", where=str(path))


def _child(text: str) -> None:
    """The child process's body: a :class:`CatalogError` is its last line of stderr, exit 2."""
    try:
        _write_layout(json.loads(text))
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


def _open_lsdb(catalog: Any, cache: Path, role: str, names: dict) -> TargetTable:
    """An ``lsdb.Catalog`` written under ``cache`` (its lazy filters computed once)."""
    import dask.base

    root = cache / f"{role}-lsdb-{dask.base.tokenize(catalog.to_dask_dataframe())[:16]}"
    if not root.exists():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        catalog.write_catalog(partial, catalog_name=f"spxdask_{role}", progress_bar=False)
        partial.rename(root)
    return _open_hats(str(root), names, None)


def _read(path: Path, kind: str, read):
    """``read()``, its failures named as the file's."""
    try:
        return read()
    except CatalogError:
        raise
    except Exception as exc:  # pyarrow / astropy raise many kinds for a bad file
        raise CatalogError(f"{path}: unreadable as {kind} ({type(exc).__name__}: {exc})") from exc


def _checked_pieces(path: Path, kind: str, columns: Columns) -> Iterator[pd.DataFrame]:
    """The file's rows checked, a piece at a time (the id type decided on the first piece)."""
    unit = "line(s)" if kind == "csv" else "row(s)"
    decided = None
    stream = formats.pieces(path, kind, columns.read())
    while True:
        piece = _read(path, kind, lambda: next(stream, None))
        if piece is None:
            return
        frame, first = piece
        if columns.id is not None and decided is None and len(frame):
            decided = id_kind(frame[columns.id])
        yield checked(frame, columns, where=str(path), first=first, unit=unit, kind=decided)


def _load(path: str | Path, role: str, **names: Any) -> pd.DataFrame:
    path = _existing(path, role)
    kind, columns = _flat(path, {**names, "need_id": role == "targets"})
    frames = list(_checked_pieces(path, kind, columns))
    if not frames or not sum(map(len, frames)):
        raise CatalogError(f"{path}: catalog has no rows")
    frame = pd.concat(frames, ignore_index=True)
    if role == "targets":
        dup = frame["targetid"].duplicated(keep=False).to_numpy()
        if dup.any():
            raise CatalogError(f"{path}: duplicate targetid on {'line(s)' if kind == 'csv' else 'row(s)'} "
                               f"{', '.join(map(str, (dup.nonzero()[0] + (2 if kind == 'csv' else 0))[:10]))}")
    return frame


def load_catalog(catalog_path: str | Path, *, id_column: str | None = None, ra_column: str | None = None,
                 dec_column: str | None = None) -> pd.DataFrame:
    """Read a whole flat catalog (CSV, Parquet, FITS table or VOTable) into memory.

    ``targetid`` keeps its exact value: int64 when every id is an integer that fits, string
    otherwise (never float). For catalogs too large for memory give the path to the batch
    run, which reads it per image (:func:`open_targets`).

    Parameters
    ----------
    catalog_path : path
        The file.
    id_column, ra_column, dec_column : str, optional
        Its names of these columns (default: ``targetid`` / ``source_id`` / ``objid`` / ``id``,
        ``ra`` / ``ra_deg`` / ..., ``dec`` / ``dec_deg`` / ...).

    Returns
    -------
    DataFrame
        targetid, ra, dec (deg) and the carried columns (motions, shapes), in file order.

    Raises
    ------
    CatalogError
        For a missing, empty or unreadable file, missing columns, non-numeric / NaN /
        out-of-range coordinates or duplicate ids, listing the offending lines or rows.
    """
    return _load(catalog_path, "targets", id_column=id_column, ra_column=ra_column, dec_column=dec_column)


def load_neighbours(path: str | Path, *, ra_column: str | None = None, dec_column: str | None = None) -> pd.DataFrame:
    """Read a whole neighbour catalog (any flat format of :func:`load_catalog`): ra, dec.

    Parameters
    ----------
    path : path
        The file.
    ra_column, dec_column : str, optional
        Its names of these columns.

    Returns
    -------
    DataFrame
        ra, dec (deg).

    Raises
    ------
    CatalogError
        For a missing or unreadable file, missing columns, or non-numeric / NaN /
        out-of-range coordinates (naming the file and the first offending rows).
    """
    return _load(path, "neighbours", ra_column=ra_column, dec_column=dec_column)[["ra", "dec"]]

