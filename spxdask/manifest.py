"""``manifest.parquet``: one record per image of a run (status, error, timing, fingerprint, the
run that made it). Records are added as images finish without rewriting the manifest: each batch
is a small file in ``<manifest>.parts/``, folded into the manifest at the end of the run (or by
the next run, after a kill). :func:`read_manifest` reads both, the newest record of an image
winning, so a run killed at any moment keeps every image it recorded."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ._io import write_parquet_atomic

__all__ = ["ASTROMETRY_COLUMNS", "MANIFEST_COLUMNS", "append_manifest", "manifest_runs", "measured_since", "read_manifest",
           "write_manifest"]

#: The astrometry record's fields, as the manifest names them (:class:`~spxdask.photometry.astrometry.Astrometry`).
ASTROMETRY_COLUMNS = {"status": "astrometry", "dx": "astrometry_dx", "dy": "astrometry_dy",
                      "dx_error": "astrometry_dx_error", "dy_error": "astrometry_dy_error", "rms": "astrometry_rms",
                      "n_stars": "astrometry_n_stars"}
#: The manifest's columns.
MANIFEST_COLUMNS = ("image", "obs_id", "detector", "version", "output", "status", "error", "n_sources", "n_rows",
                    "seconds", "fingerprint", "run", *ASTROMETRY_COLUMNS.values())
_TYPES = {"detector": "Int8", "n_sources": "Int64", "n_rows": "Int64", "astrometry_n_stars": "Int64",
          **{c: "float64" for c in ASTROMETRY_COLUMNS.values() if c not in ("astrometry", "astrometry_n_stars")}}


def _parts(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(_TYPES)


def append_manifest(rows: list[dict], path: Path) -> None:
    """Add run records to the manifest as one small file beside it (the records' size is
    written, not the manifest's).

    Parameters
    ----------
    rows : list of dict
        Records, keyed by :data:`MANIFEST_COLUMNS` (missing keys are null).
    path : Path
        The manifest (``<run>/manifest.parquet``).
    """
    if rows:
        folder = _parts(path)
        folder.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(_frame(rows), folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet")


def read_manifest(path: Path, *, columns: list[str] | None = None) -> pd.DataFrame:
    """The manifest with the records added since it was last folded.

    Parameters
    ----------
    path : Path
        The manifest (``<run>/manifest.parquet``).
    columns : list of str, optional
        The columns to return (default: all).

    Returns
    -------
    DataFrame
        One row per image: its newest record.
    """
    files = ([path] if path.exists() else []) + sorted(_parts(path).glob("*.parquet"))
    if not files:
        return _frame([])[columns or list(MANIFEST_COLUMNS)]
    wanted = {"image", *columns} if columns else None

    def read(f: Path) -> pd.DataFrame:  # only the columns wanted, of those it has (an older file may lack some)
        return pd.read_parquet(f, columns=None if wanted is None else [c for c in pq.read_schema(f).names if c in wanted])

    merged = pd.concat([read(f) for f in files], ignore_index=True)
    latest = merged.drop_duplicates("image", keep="last").reset_index(drop=True)
    return latest.reindex(columns=columns) if columns else latest  # an older manifest may lack some


def write_manifest(rows: list[dict], path: Path) -> None:
    """Merge run records, and any added by :func:`append_manifest`, into the manifest file: a
    new record of an image replaces its old one.

    Parameters
    ----------
    rows : list of dict
        Records, keyed by :data:`MANIFEST_COLUMNS` (missing keys are null).
    path : Path
        The manifest (``<run>/manifest.parquet``), written atomically.
    """
    added = sorted(_parts(path).glob("*.parquet"))
    if not rows and not added:
        return
    merged = pd.concat([read_manifest(path), _frame(rows)], ignore_index=True)
    write_parquet_atomic(merged.drop_duplicates("image", keep="last").astype(_TYPES), path)
    for part in added:  # folded: a kill before this line leaves records read twice, the same
        part.unlink()
    if added and not any(_parts(path).iterdir()):
        _parts(path).rmdir()


def measured_since(path: Path, runs: set) -> int:
    """The images the manifest records as measured by a run not in ``runs``.

    Parameters
    ----------
    path : Path
        The manifest.
    runs : set of str
        The runs it named before (:func:`manifest_runs`).

    Returns
    -------
    int
        What the runs since measured (e.g. an interrupted extraction).
    """
    manifest = read_manifest(path, columns=["status", "run"])
    return int(((manifest["status"] == "ok") & ~manifest["run"].isin(runs) & manifest["run"].notna()).sum())


def manifest_runs(path: Path) -> set:
    """The runs the manifest names.

    Parameters
    ----------
    path : Path
        The manifest.

    Returns
    -------
    set of str
    """
    return set(read_manifest(path, columns=["run"])["run"].dropna())
