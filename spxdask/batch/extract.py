"""Batch extraction: one Dask task per image, each writing ``<obs_id>_D<n>.parquet``.

Images arrive as :class:`~spxdask.archive.observation.Observation` records (from a query:
identity, footprint, processing version) or as bare files (their record is read from their
headers inside the task). The catalog and its spatial index enter the task graph once, shared
by every task; each task selects the sources inside its image's footprint, measures them and
writes one file, also when no source falls in the image.

Each file records in its metadata what made it (``spxdask.fingerprint``: the photometry
config, the catalog rows it measured, the image record and the package version). A rerun
reuses a file only when that fingerprint is unchanged, so a changed config or catalog is
measured again. Failures are recorded in the run manifest and never stop the other images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import dask
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dask.base import tokenize

from .. import __version__
from .._io import is_transient, write_parquet_atomic
from ..archive.local import observation_of
from ..archive.observation import Observation
from ..cluster import compute, running_client
from ..kernels import warm_workers
from ..photometry import COLUMNS, PhotometryConfig, measure_image
from ..source import Source, sources_frame
from ..spherex.channels import PIXEL_SCALE_ARCSEC
from ..spherex.l2 import L2File
from .select import CatalogIndex

UNITS = {"ra": "deg", "dec": "deg", "mjd": "d", "x": "pix", "y": "pix", "flux": "uJy", "flux_error": "uJy",
         "mag_ab": "mag(AB)", "mag_ab_error": "mag", "wavelength": "um", "bandwidth": "um",
         "bg_level": "uJy/arcsec2", "bg_error": "uJy/arcsec2", "aperture_radius": "pix",
         "flux_total": "uJy", "flux_total_error": "uJy", "flux_psf": "uJy", "flux_psf_error": "uJy",
         "mag_psf_ab": "mag(AB)", "mag_psf_ab_error": "mag"}
_TYPES = {"obs_id": pa.string(), "band": pa.string(), "filename": pa.string(), "quality": pa.string(),
          "psf_quality": pa.string(), "pipeline_version": pa.string(), "release": pa.string(),
          "flag": pa.int32(), "detector": pa.int8(), "n_bad": pa.int16(),
          "psf_n_neighbours": pa.int32()}
MANIFEST_COLUMNS = ("image", "obs_id", "detector", "version", "output", "status", "error", "n_sources", "n_rows",
                    "seconds", "fingerprint")
FINGERPRINT_KEY = b"spxdask.fingerprint"
RUN_KEY = b"spxdask.run"
#: Sources within this margin (deg) outside a footprint are still handed to its task.
MARGIN_DEG = 2 * PIXEL_SCALE_ARCSEC / 3600
#: retries of a remote file read in place after a network fault, the first after ~READ_BACKOFF s
READ_RETRIES = 4
READ_BACKOFF = 0.5


def per_image_schema(targetid_type: pa.DataType, fingerprint: str = "", run: str = "") -> pa.Schema:
    """The one Arrow schema of per-image Parquet files; units in the field metadata and in the
    schema metadata key ``spxdask.units``, what made the file under ``spxdask.fingerprint`` and
    the run that wrote it under ``spxdask.run``."""
    fields = [pa.field(c, targetid_type if c == "targetid" else _TYPES.get(c, pa.float64()),
                       metadata={"unit": UNITS[c]} if c in UNITS else None) for c in COLUMNS]
    return pa.schema(fields, metadata={"spxdask.units": json.dumps(UNITS), FINGERPRINT_KEY.decode(): fingerprint,
                                       RUN_KEY.decode(): run})


def targetid_type(catalog: pd.DataFrame) -> pa.DataType:
    """int64 for integer target ids, string otherwise (never float)."""
    return pa.int64() if pd.api.types.is_integer_dtype(catalog["targetid"]) else pa.string()


def output_name(obs_id: str, detector: int) -> str:
    """``<obs_id>_D<n>.parquet``, with anything but [A-Za-z0-9_.-] in obs_id replaced."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', obs_id).lstrip('.')}_D{int(detector)}.parquet"


def fingerprint(observation: Observation, sources: pd.DataFrame, config: PhotometryConfig,
                neighbours: pd.DataFrame | None = None) -> str:
    """What a per-image file is made from, hashed: the image record (where it was read from
    aside), the catalog rows measured, the neighbour rows fitted with them, the photometry
    config and the package version."""
    image = {k: v for k, v in asdict(observation).items() if k != "url"}
    made_from = {"image": image, "sources": _rows_hash(sources[["targetid", "ra", "dec"]]),
                 "config": config.to_dict(), "spxdask": __version__}
    if neighbours is not None:
        made_from["neighbours"] = _rows_hash(neighbours[["ra", "dec"]])
    return hashlib.sha256(json.dumps(made_from, sort_keys=True, default=str).encode()).hexdigest()


def _rows_hash(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def _footer(path: Path) -> pq.FileMetaData | None:
    """A per-image file's Parquet footer (None for a missing or unreadable file): its row count
    and, as key-value metadata, what made it."""
    try:
        return pq.read_metadata(path)
    except (OSError, pa.ArrowInvalid):
        return None


def recorded_fingerprint(path: Path) -> str | None:
    """The fingerprint a per-image file was written with (None for a missing or older file)."""
    footer = _footer(path)
    if footer is None:
        return None
    return (footer.metadata or {}).get(FINGERPRINT_KEY, b"").decode() or None


def _write(table: pd.DataFrame, path: Path, tid_type: pa.DataType, made_from: str = "", run: str = "") -> None:
    schema = per_image_schema(tid_type, made_from, run)
    if tid_type == pa.string():
        table = table.assign(targetid=table["targetid"].astype(str))
    write_parquet_atomic(pa.Table.from_pandas(table, schema=schema, preserve_index=False), path)


def _in_image(index: CatalogIndex, observation: Observation, margin_deg: float = MARGIN_DEG) -> pd.DataFrame:
    return index.catalog.take(index.in_polygon(observation.corners, margin_deg=margin_deg))


def _neighbours_in_image(index: CatalogIndex | None, observation: Observation,
                         config: PhotometryConfig) -> pd.DataFrame | None:
    """The neighbour rows whose PSF can reach the image's pixels (None without a neighbour
    catalog or a PSF fit)."""
    if index is None or not config.psf_fit:
        return None
    return _in_image(index, observation, MARGIN_DEG + (config.psf_fit_radius + 1) * PIXEL_SCALE_ARCSEC / 3600)


def _neighbour_index(neighbours: pd.DataFrame | None) -> CatalogIndex | None:
    if neighbours is None:
        return None
    missing = {"ra", "dec"} - set(neighbours.columns)
    if missing:
        raise ValueError(f"neighbours lack column(s) {sorted(missing)}")
    return CatalogIndex(neighbours[["ra", "dec"]])


def process_single_image(image_path: str | Path, sources: pd.DataFrame | Sequence[Source],
                         config: PhotometryConfig, output_dir: str | Path,
                         skip_existing: bool = True, *, neighbours: pd.DataFrame | None = None) -> Path | None:
    """Measure all ``sources`` that fall in one image and write ``<obs_id>_D<n>.parquet``.

    Parameters
    ----------
    image_path : path or URL
        A SPHEREx L2 file (its identity is read from its headers).
    sources : DataFrame (targetid, ra, dec) or list of Source
        Candidate sources; those outside the image are ignored.
    config : PhotometryConfig
    output_dir : path
        Folder of the per-image Parquet files.
    skip_existing : bool
        Return None without work when the output exists and was made from the same image,
        sources, neighbours and config.
    neighbours : DataFrame (ra, dec), optional
        More sources fitted with the targets in the joint PSF fit (a deeper catalog); they
        get no rows.

    Returns
    -------
    Path or None
        The file written (also when no source falls in the image), or None when skipped.
    """
    catalog = sources_frame(sources)
    with L2File(image_path) as l2:
        observation = observation_of(l2, str(image_path))
        out = Path(output_dir) / output_name(observation.obs_id, observation.detector)
        mine = _in_image(CatalogIndex(catalog), observation)
        near = _neighbours_in_image(_neighbour_index(neighbours), observation, config)
        made_from = fingerprint(observation, mine, config, near)
        if skip_existing and recorded_fingerprint(out) == made_from:
            return None
        table = measure_image(l2, mine, config, neighbours=near)
    _write(table, out, targetid_type(catalog), made_from)
    return out


def _extract(image: Observation | str, index: CatalogIndex, neighbour_index: CatalogIndex | None, *, out_dir: str,
             config: PhotometryConfig, tid_type: pa.DataType, skip_existing: bool, run: str,
             storage_options: dict | None = None) -> dict:
    """Measure one image (a record, or a file whose record its headers give); the manifest row.
    A file already made from the same inputs is reused ("skipped"), unless this ``run`` wrote
    it: then the task is running again after its worker was lost, and the image counts as
    measured."""
    t0 = time.perf_counter()
    row = {"image": image.url if isinstance(image, Observation) else image, "n_rows": 0, "error": None}
    try:
        if not isinstance(image, Observation):
            with L2File(image, storage_options=storage_options) as l2:
                image = observation_of(l2, image)
        out = Path(out_dir) / output_name(image.obs_id, image.detector)
        sources = _in_image(index, image)
        near = _neighbours_in_image(neighbour_index, image, config)
        made_from = fingerprint(image, sources, config, near)
        row.update(obs_id=image.obs_id, detector=image.detector, version=image.version, output=str(out),
                   n_sources=len(sources), fingerprint=made_from)
        footer = _footer(out) if skip_existing else None
        recorded = (footer.metadata or {}) if footer else {}
        if footer and recorded.get(FINGERPRINT_KEY) == made_from.encode():
            status = "ok" if recorded.get(RUN_KEY) == run.encode() else "skipped"
            row.update(status=status, n_rows=footer.num_rows)
        else:
            table = _measured(image.url, sources, config, near, storage_options)
            _write(table, out, tid_type, made_from, run)
            row.update(status="ok", n_rows=len(table))
    except Exception as exc:  # recorded in the manifest; the run goes on
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - t0
    return row


def _measured(url: str, sources: pd.DataFrame, config: PhotometryConfig, near: pd.DataFrame | None,
              storage_options: dict | None) -> pd.DataFrame:
    """:func:`measure_image` of the file at ``url``; a network fault that may pass (a remote
    file read in place: throttling, a reset, a cut body) is retried ``READ_RETRIES`` times after
    growing waits, anything else raised at once."""
    for attempt in range(READ_RETRIES + 1):
        try:
            with L2File(url, storage_options=storage_options) as l2:
                return measure_image(l2, sources, config, neighbours=near)
        except Exception as exc:
            if attempt == READ_RETRIES or not is_transient(exc):
                raise
            time.sleep(READ_BACKOFF * 2**attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def write_manifest(rows: list[dict], path: Path) -> None:
    """Merge run records into the manifest: a new record of an image replaces its old one."""
    new = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if path.exists():
        old = pd.read_parquet(path)
        new = pd.concat([old[~old["image"].isin(new["image"])], new], ignore_index=True)
    write_parquet_atomic(new.astype({"detector": "Int8", "n_sources": "Int64", "n_rows": "Int64"}), path)


def extract_images(images: Sequence[Observation | str], sources: pd.DataFrame | Sequence[Source],
                   config: PhotometryConfig, output_dir: str | Path, *, skip_existing: bool = True,
                   manifest_path: str | Path | None = None, storage_options: dict | None = None,
                   neighbours: pd.DataFrame | None = None, client=None) -> int:
    """Measure images with Dask: one ``photometry-<obs_id>_D<n>`` task per image.

    Parameters
    ----------
    images : sequence of Observation or path / URL
        Records from a query (``url`` says where to read each file) or bare L2 files.
    sources : DataFrame (targetid, ra, dec) or list of Source
    config : PhotometryConfig
    output_dir : path
        Folder of the per-image Parquet files.
    skip_existing : bool
        Reuse files whose recorded fingerprint matches (same image, sources and config).
    manifest_path : path, optional
        Default ``<output_dir>/../manifest.parquet``; one row per image (status, error,
        fingerprint, timing).
    storage_options : dict, optional
        fsspec options for remote files.
    neighbours : DataFrame (ra, dec), optional
        A deeper catalog whose sources enter the joint PSF fit of each image (selected per
        image, like the targets); they get no rows.
    client : distributed.Client, optional
        Where the tasks run (default: the running Client, else local threads).

    Returns
    -------
    int
        Number of images newly measured.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = Path(manifest_path) if manifest_path else output_dir.parent / "manifest.parquet"
    catalog = sources_frame(sources)
    index = CatalogIndex(catalog)
    # the catalog and its index travel once, as one shared input of every task; the shared
    # options sit in a partial, which dask does not traverse for every task
    shared = dask.delayed(index, name=f"catalog-{tokenize(index.catalog)}")
    neighbour_index = _neighbour_index(neighbours)
    shared_neighbours = (None if neighbour_index is None
                         else dask.delayed(neighbour_index, name=f"neighbours-{tokenize(neighbour_index.catalog)}"))
    measure = functools.partial(_extract, out_dir=str(output_dir), config=config, tid_type=targetid_type(catalog),
                                skip_existing=skip_existing, run=uuid.uuid4().hex, storage_options=storage_options)
    tasks = [dask.delayed(measure, pure=False)(image, shared, shared_neighbours,
                                               dask_key_name=f"photometry-{_label(image, k)}")
             for k, image in enumerate(images)]
    client = client or running_client()
    if tasks and client is not None:
        warm_workers(client)
    rows = list(compute(*tasks, client=client)) if tasks else []
    # a reused file keeps the manifest record of the run that made it
    known = set(pd.read_parquet(manifest, columns=["image"])["image"]) if manifest.exists() else set()
    records = [r if r["status"] != "skipped" else {**r, "status": "ok"} for r in rows
               if r["status"] != "skipped" or r["image"] not in known]
    if records:
        write_manifest(records, manifest)
    return sum(r["status"] == "ok" for r in rows)


def _label(image: Observation | str, k: int) -> str:
    if isinstance(image, Observation):
        return Path(output_name(image.obs_id, image.detector)).stem
    return f"{Path(str(image)).stem}-{k}"


def run_extraction(image_dir: str | Path, sources: pd.DataFrame | Sequence[Source], config: PhotometryConfig,
                   output_dir: str | Path, n_workers: int = 12, skip_existing: bool = True, *,
                   manifest_path: str | Path | None = None, neighbours: pd.DataFrame | None = None,
                   client=None) -> int:
    """Measure every L2 image under ``image_dir`` (recursively) with Dask (reference name).

    Each ``photometry-…`` task reads its file's record from the headers, selects the catalog
    sources in its footprint (the catalog and its index are shared by all tasks) and measures
    them, fitting them jointly with the ``neighbours`` (ra, dec) in the footprint.
    ``n_workers`` is the reference's pool size, accepted and ignored (the cluster decides;
    :mod:`spxdask.compat`).

    Returns
    -------
    int
        Number of images newly measured. Failures (unreadable or corrupt files) are written to
        the manifest (default ``<output_dir>/../manifest.parquet``) with their error.
    """
    from ..compat import ignored

    ignored("run_extraction", n_workers=n_workers)
    images = sorted(str(p) for p in Path(image_dir).rglob("*.fits") if not p.name.startswith("."))
    return extract_images(images, sources, config, output_dir, skip_existing=skip_existing,
                          manifest_path=manifest_path, neighbours=neighbours, client=client)
