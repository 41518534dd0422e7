"""File locations and output: whether a location is a remote URL; atomic output (write under a
temporary name in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a remote fsspec URL (``https://``, ``s3://``, ...), not a local
    path or ``file://`` URL."""
    location = str(location)
    return "://" in location and not location.startswith("file://")


def is_http_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL with a host (a TAP service address)."""
    parts = urlsplit(str(text))
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    A reader never sees a partial file under the final name; on failure the temporary file
    is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet_atomic(data: pd.DataFrame | pa.Table, path: str | os.PathLike,
                         schema: pa.Schema | None = None) -> Path:
    """Write a table to Parquet atomically (with ``schema`` when given)."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)
