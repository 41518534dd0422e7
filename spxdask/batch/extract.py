"""Batch extraction: one Dask task per image, each writing ``<obs_id>_D<n>.parquet``.

Source selection happens once on the client against a spatial index of the catalog; the
catalog enters the task graph once, and each task carries only the row positions of its own
sources. A file is written for every image that was measured, also when no source falls in
it, so reruns skip it. Failures are recorded in the run manifest and never stop the other
images.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import dask
import dask.bag as db
from distributed import as_completed
from dask.base import tokenize
import numpy as np
import pandas as pd
import pyarrow as pa

from .._io import write_parquet_atomic
from ..photometry import COLUMNS, PhotometryConfig, measure_image
from ..source import Source, sources_frame
from ..spherex.channels import PIXEL_SCALE_ARCSEC
from ..spherex.l2 import L2File, read_footprint
from ..cluster import compute, gather, running_client
from .select import CatalogIndex

UNITS = {"ra": "deg", "dec": "deg", "mjd": "d", "x": "pix", "y": "pix", "flux": "uJy", "flux_error": "uJy",
         "mag_ab": "mag(AB)", "mag_ab_error": "mag", "wavelength": "um", "bandwidth": "um",
         "bg_level": "uJy/arcsec2", "bg_error": "uJy/arcsec2", "aperture_radius": "pix",
         "flux_total": "uJy", "flux_total_error": "uJy"}
_TYPES = {"obs_id": pa.string(), "band": pa.string(), "filename": pa.string(), "quality": pa.string(),
          "flag": pa.int32(), "detector": pa.int8(), "n_bad": pa.int16()}
_L2_NAME = re.compile(r"level2_(?P<obs_id>[A-Za-z0-9_]+)D(?P<det>[1-6])_spx_")
MANIFEST_COLUMNS = ("image", "obs_id", "detector", "output", "status", "error", "n_sources", "n_rows", "seconds")


def per_image_schema(targetid_type: pa.DataType) -> pa.Schema:
    """The one Arrow schema of per-image Parquet files; units in the field metadata and in the
    schema metadata key ``spxdask.units``."""
    fields = [pa.field(c, targetid_type if c == "targetid" else _TYPES.get(c, pa.float64()),
                       metadata={"unit": UNITS[c]} if c in UNITS else None) for c in COLUMNS]
    return pa.schema(fields, metadata={"spxdask.units": json.dumps(UNITS)})


def targetid_type(catalog: pd.DataFrame) -> pa.DataType:
    """int64 for integer target ids, string otherwise (never float)."""
    return pa.int64() if pd.api.types.is_integer_dtype(catalog["targetid"]) else pa.string()


def image_identity(image_path: str | Path) -> tuple[str, int]:
    """(obs_id, detector) from an IRSA L2 file name, else from the file's header."""
    match = _L2_NAME.search(Path(image_path).name)
    if match:
        return match["obs_id"], int(match["det"])
    with L2File(image_path) as l2:
        return l2.meta.obs_id, l2.meta.detector


def output_name(obs_id: str, detector: int) -> str:
    """``<obs_id>_D<n>.parquet``, with anything but [A-Za-z0-9_.-] in obs_id replaced."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', obs_id).lstrip('.')}_D{int(detector)}.parquet"


def _write(table: pd.DataFrame, path: Path, tid_type: pa.DataType) -> None:
    schema = per_image_schema(tid_type)
    if tid_type == pa.string():
        table = table.assign(targetid=table["targetid"].astype(str))
    write_parquet_atomic(pa.Table.from_pandas(table, schema=schema, preserve_index=False), path)


def process_single_image(image_path: str | Path, sources: pd.DataFrame | Sequence[Source],
                         config: PhotometryConfig, output_dir: str | Path,
                         skip_existing: bool = True) -> Path | None:
    """Measure all ``sources`` that fall in one image and write ``<obs_id>_D<n>.parquet``.

    Parameters
    ----------
    image_path : path or URL
        A SPHEREx L2 file.
    sources : DataFrame (targetid, ra, dec) or list of Source
        Candidate sources; those outside the image are ignored.
    config : PhotometryConfig
    output_dir : path
        Folder of the per-image Parquet files.
    skip_existing : bool
        Return None without work when the output exists.

    Returns
    -------
    Path or None
        The file written (also when no source falls in the image), or None when skipped.
    """
    catalog = sources_frame(sources)
    obs_id, det = image_identity(image_path)
    out = Path(output_dir) / output_name(obs_id, det)
    if skip_existing and out.exists():
        return None
    with L2File(image_path) as l2:
        table = measure_image(l2, catalog, config)
    _write(table, out, targetid_type(catalog))
    return out


def _footprint(path: str, storage_options: dict | None = None) -> dict:
    try:
        return {"image": path, "corners": read_footprint(path, storage_options=storage_options), "error": None}
    except Exception as exc:  # recorded in the manifest; the run goes on
        return {"image": path, "corners": None, "error": f"{type(exc).__name__}: {exc}"}


def _extract(path: str, catalog: pd.DataFrame, rows: np.ndarray, *, out: str, config: PhotometryConfig,
             tid_type: pa.DataType, storage_options: dict | None = None) -> dict:
    """Measure the catalog's ``rows`` (positions) in one image; the manifest record."""
    obs_id, det = Path(out).stem.rsplit("_D", 1)
    row = {"image": path, "obs_id": obs_id, "detector": int(det), "output": out,
           "n_sources": len(rows), "n_rows": 0, "error": None}
    t0 = time.perf_counter()
    try:
        sources = catalog.take(rows)
        with L2File(path, storage_options=storage_options) as l2:
            table = measure_image(l2, sources, config)
        _write(table, Path(out), tid_type)
        row.update(status="ok", n_rows=len(table))
    except Exception as exc:
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - t0
    return row


def _known(footprints: list[dict]) -> dict[str, np.ndarray | str]:
    """image -> corners, or the error that kept them from being read."""
    return {fp["image"]: fp["corners"] if fp["error"] is None else fp["error"] for fp in footprints}


def write_manifest(rows: list[dict], path: Path) -> None:
    """Merge run records into the manifest: a new record of an image replaces its old one."""
    new = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if path.exists():
        old = pd.read_parquet(path)
        new = pd.concat([old[~old["image"].isin(new["image"])], new], ignore_index=True)
    write_parquet_atomic(new.astype({"detector": "Int8", "n_sources": "Int64", "n_rows": "Int64"}), path)


def extract_images(images: Sequence[str], sources: pd.DataFrame | Sequence[Source], config: PhotometryConfig,
                   output_dir: str | Path, skip_existing: bool = True, *, manifest_path: str | Path | None = None,
                   footprints: dict[str, np.ndarray] | None = None, storage_options: dict | None = None) -> int:
    """Measure the given L2 files (paths or URLs) with Dask; see :func:`run_extraction`.

    ``footprints`` (image -> (4, 2) corners, e.g. from a query) saves reading the headers
    first; images without one get theirs read by one task per bag partition, and on a
    distributed Client each image's photometry task is submitted as soon as its footprint is
    known, while the other footprints are still being read.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = Path(manifest_path) if manifest_path else output_dir.parent / "manifest.parquet"
    catalog = sources_frame(sources)
    tid_type = targetid_type(catalog)
    todo, failures = [], []
    for path in images:
        try:
            out = output_dir / output_name(*image_identity(path))
        except Exception as exc:
            failures.append({"image": path, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
            continue
        if not (skip_existing and out.exists()):
            todo.append((path, str(out)))
    known = dict(footprints or {})
    index = CatalogIndex(catalog)
    margin = 2 * PIXEL_SCALE_ARCSEC / 3600
    # the catalog travels once, as one shared input of every task; each task carries only the
    # positions of its own sources in it (a few bytes a source), so the graph stays small and
    # a task lost with its worker can run again elsewhere. The shared arguments sit in a
    # partial, which dask does not traverse for every task.
    shared = dask.delayed(index.catalog, name=f"catalog-{tokenize(index.catalog)}")
    measure = functools.partial(_extract, config=config, tid_type=tid_type, storage_options=storage_options)
    position = np.int32 if len(index.catalog) < 2**31 else np.int64

    def tasks(pairs, catalog_ref) -> list:
        """The photometry task of each (image, output) whose footprint is known."""
        out = []
        for path, dest in pairs:
            corners = known[path]
            if isinstance(corners, str):
                failures.append({"image": path, "output": dest, "status": "failed", "error": corners})
                continue
            mine = index.in_polygon(np.asarray(corners).reshape(-1, 2), margin_deg=margin).astype(position)
            out.append(dask.delayed(measure, pure=False)(path, catalog_ref, mine, out=dest,
                                                         dask_key_name=f"photometry-{Path(dest).stem}"))
        return out

    unknown = [p for p, _ in todo if p not in known]
    footprint_parts = db.from_sequence(unknown, npartitions=max(1, min(len(unknown) // 8, 256))).map(
        _footprint, storage_options).to_delayed() if unknown else []
    client = running_client()
    if client is None:
        for part in compute(*footprint_parts):
            known.update(_known(part))
        rows = list(compute(*tasks(todo, shared)))
    else:
        # footprints and photometry overlap: each image's task is submitted as soon as its
        # footprint arrives, so the workers never wait for the client's source selection
        catalog_ref = client.compute(shared)
        destination = dict(todo)
        futures = client.compute(tasks([(p, d) for p, d in todo if p in known], catalog_ref))
        for done in as_completed(client.compute(footprint_parts)):
            part = _known(done.result())
            known.update(part)
            futures += client.compute(tasks([(p, destination[p]) for p in part], catalog_ref))
        rows = gather(futures, client)
    if rows or failures:
        write_manifest(rows + failures, manifest)
    return sum(r["status"] == "ok" for r in rows)


def run_extraction(image_dir: str | Path, sources: pd.DataFrame | Sequence[Source], config: PhotometryConfig,
                   output_dir: str | Path, n_workers: int = 12, skip_existing: bool = True, *,
                   manifest_path: str | Path | None = None) -> int:
    """Measure every L2 image under ``image_dir`` (recursively) with Dask.

    Footprints are read (from the IMAGE headers) by one task per bag partition; the catalog
    is indexed once on the client and each ``photometry-<obs_id>_D<n>`` task measures only the
    sources in its footprint (it carries their row positions; the catalog is shared by all
    tasks). Runs on the current distributed Client when there is one — photometry tasks are
    submitted as the footprints arrive — else on local threads (``n_workers`` is kept for
    compatibility with the reference; the cluster decides).

    Returns
    -------
    int
        Number of images newly measured. Failures (unreadable or corrupt files) are written to
        the manifest (default ``<output_dir>/../manifest.parquet``) with their error.
    """
    images = sorted(str(p) for p in Path(image_dir).rglob("*.fits") if not p.name.startswith("."))
    return extract_images(images, sources, config, output_dir, skip_existing, manifest_path=manifest_path)
