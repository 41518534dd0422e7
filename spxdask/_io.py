"""File locations and output: whether a location is a remote URL, whether a failed read may
succeed when tried again; atomic output (write under a temporary name in the same folder,
then rename)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a remote fsspec URL (``https://``, ``s3://``, ...), not a local
    path or ``file://`` URL."""
    location = str(location)
    return "://" in location and not location.startswith("file://")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a network fault that may pass:
    a dropped or cut connection, a timeout, a throttled or failing server (HTTP 5xx, 408, 429;
    S3 ``SlowDown``, ``InternalError``). Missing files, refused access and unreadable data are
    not."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = getattr(exc, "status", None)  # aiohttp
        response = getattr(exc, "response", None)  # botocore's ClientError
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and status >= 400:
            return status >= 500 or status in (408, 429)
        if isinstance(exc, (aiohttp.ClientError, ConnectionError, TimeoutError)):
            return True
        if type(exc).__module__.startswith(("botocore", "aiobotocore")) and response is None:
            return True  # botocore's connection, read-timeout and streaming errors
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


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


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically, its folder made when missing; the format from the
    file's extension (PNG without one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    return path


def write_parquet_atomic(data: pd.DataFrame | pa.Table, path: str | os.PathLike,
                         schema: pa.Schema | None = None, *, row_group_size: int | None = None,
                         use_dictionary: bool | list[str] = True) -> Path:
    """Write a table to Parquet atomically (with ``schema`` when given; ``use_dictionary`` as
    :func:`pyarrow.parquet.write_table` takes it, e.g. :func:`coded_columns`)."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, use_dictionary=use_dictionary)
    return Path(path)


def coded_columns(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of ``schema`` worth dictionary-encoding: text and integers of up
    to 32 bits (names, codes, flags, counts), nested ones too. Measurements (floats) and 64-bit
    ids are mostly distinct values: the writer's dictionary attempt on them only costs time
    (faster writes and smaller files on catalog partitions)."""
    def paths(field: pa.Field, prefix: str) -> list[str]:
        kind, name = field.type, f"{prefix}{field.name}"
        if pa.types.is_struct(kind):
            return [p for sub in kind for p in paths(sub, f"{name}.")]
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return paths(kind.value_field.with_name("element"), f"{name}.list.")  # Parquet's name for it
        coded = pa.types.is_string(kind) or pa.types.is_large_string(kind) or (
            pa.types.is_integer(kind) and kind.bit_width <= 32)
        return [name] if coded else []

    return [p for field in schema for p in paths(field, "")]
