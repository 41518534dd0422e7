"""The Observation record: one L2 file (exposure x detector) found by a query, with one Arrow
schema and round trips to pandas and Parquet."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import write_parquet_atomic

SCHEMA = pa.schema([
    pa.field("obs_id", pa.string(), nullable=False),
    pa.field("detector", pa.int8(), nullable=False),
    pa.field("mjd", pa.float64(), metadata={"unit": "d", "doc": "midpoint of t_min and t_max"}),
    pa.field("t_min", pa.float64(), metadata={"unit": "d"}),
    pa.field("t_max", pa.float64(), metadata={"unit": "d"}),
    pa.field("wavelength_min", pa.float64(), metadata={"unit": "um"}),
    pa.field("wavelength_max", pa.float64(), metadata={"unit": "um"}),
    pa.field("footprint", pa.list_(pa.float64(), 8), metadata={"doc": "ra1 dec1 ... ra4 dec4, degrees"}),
    pa.field("url", pa.string(), nullable=False),
    pa.field("size", pa.int64()),
    pa.field("checksum", pa.string(), metadata={"doc": "md5 hex digest, when the archive gives one"}),
    pa.field("collection", pa.string()),
    pa.field("version", pa.string(), metadata={"doc": "processing tag, e.g. l2b-v21-2026-017"}),
])
_VERSION = re.compile(r"l2b-v(\d+)-(\d{4})-(\d{3})")


@dataclass(frozen=True)
class Observation:
    """One SPHEREx L2 file: exposure ``obs_id`` seen by ``detector``.

    Parameters
    ----------
    obs_id : str
        The exposure.
    detector : int
        1-6.
    mjd : float
        Mid-exposure MJD.
    t_min, t_max : float
        Start and end of the exposure (MJD).
    wavelength_min, wavelength_max : float
        The wavelengths the image spans (µm).
    footprint : tuple of float
        The four corners, (ra, dec) pairs in degrees, flattened.
    url : str
        Where the file is read: a URL, or a local path once fetched.
    size : int, optional
        Its size in bytes.
    checksum : str, optional
        Its MD5, when the archive publishes one.
    collection : str
        IRSA's collection (``spherex_qr2``, ...).
    version : str
        The processing version (``l2b-v21-2026-017``, ...).
    """

    obs_id: str
    detector: int
    mjd: float
    t_min: float
    t_max: float
    wavelength_min: float
    wavelength_max: float
    footprint: tuple[float, ...]
    url: str
    size: int | None = None
    checksum: str | None = None
    collection: str = ""
    version: str = ""

    @property
    def band(self) -> str:
        return f"D{self.detector}"

    @property
    def filename(self) -> str:
        """The file's own name (last path element of the URL, query string dropped)."""
        return PurePosixPath(self.url.split("?")[0]).name

    @property
    def corners(self) -> np.ndarray:
        return np.asarray(self.footprint, float).reshape(4, 2)

    @property
    def wavelength_center(self) -> float:
        return 0.5 * (self.wavelength_min + self.wavelength_max)


def version_key(version: str) -> tuple[int, int, int]:
    """Sort key of a processing tag: (version number, year, day); unknown tags sort first."""
    m = _VERSION.search(version or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else (-1, -1, -1)


def to_table(observations: Iterable[Observation] | pd.DataFrame) -> pa.Table:
    """Observations as an Arrow table with :data:`SCHEMA`."""
    df = observations if isinstance(observations, pd.DataFrame) else pd.DataFrame(
        [asdict(o) for o in observations], columns=[f.name for f in fields(Observation)])
    df = df.assign(footprint=pd.Series([list(map(float, f)) for f in df["footprint"]], index=df.index, dtype=object))
    return pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def to_frame(observations: Iterable[Observation]) -> pd.DataFrame:
    return to_table(observations).to_pandas()


class Records:
    """The records of a table with :data:`SCHEMA` columns, made a chunk at a time as they are
    iterated: a query's answer of 10^5 images is not held as 10^5 objects.

    Parameters
    ----------
    frame : DataFrame
    chunk : int
        Records made at a time.
    """

    def __init__(self, frame: pd.DataFrame, chunk: int = 1024):
        self.frame, self.chunk = frame, chunk

    def __len__(self) -> int:
        return len(self.frame)

    def __iter__(self) -> Iterator[Observation]:
        for start in range(0, len(self.frame), self.chunk):
            yield from from_frame(self.frame.iloc[start:start + self.chunk])


def from_frame(df: pd.DataFrame) -> list[Observation]:
    """Observation records from a table with :data:`SCHEMA` columns."""
    out = []
    for row in df[SCHEMA.names].to_dict("records"):
        row["footprint"] = tuple(float(v) for v in row["footprint"])
        row["detector"] = int(row["detector"])
        row["size"] = None if pd.isna(row["size"]) else int(row["size"])
        row["checksum"] = None if row["checksum"] is None or pd.isna(row["checksum"]) else str(row["checksum"])
        out.append(Observation(**row))
    return out


def save(observations: Iterable[Observation] | pd.DataFrame, path: str | Path) -> Path:
    """Write observations to Parquet atomically."""
    return write_parquet_atomic(to_table(observations), path)


def load(path: str | Path) -> list[Observation]:
    return from_frame(pq.read_table(path, schema=SCHEMA).to_pandas())


def newest_versions(df: pd.DataFrame) -> pd.DataFrame:
    """Keep only the newest processing version per (obs_id, detector)."""
    if df.empty:
        return df
    key = df["version"].map(version_key)
    order = df.assign(_k=key).sort_values(["obs_id", "detector", "_k"])
    return order.drop_duplicates(["obs_id", "detector"], keep="last").drop(columns="_k").sort_index()
