"""Batch extraction: one Dask task per image, each writing ``<obs_id>_D<n>.parquet``.

Images arrive as :class:`~spxdask.archive.observation.Observation` records (from a query:
identity, footprint, processing version) or as bare files (their record is read from their
headers inside the task). Each task reads the targets inside its image's footprint (from the
HEALPix pixels it touches of a :class:`~spxdask.targets.TargetTable`; rows given in memory go
to the workers once, scattered), measures them and writes one file, also when no source falls
in the image. The tasks go to
the cluster through a bounded window (a few per worker thread, the next as one finishes), so
the scheduler's state does not grow with the run, and the manifest is brought up to date as
images finish: a run stopped at any moment keeps the record of every image it measured.

Each file records in its metadata what made it (``spxdask.fingerprint``: the photometry
config, the target rows it measured, the image record and the package version). A rerun
reuses a file only when that fingerprint is unchanged, so a changed config or target list is
measured again. Failures are recorded in the run manifest and never stop the other images.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dask
import pandas as pd
import pyarrow as pa

from .. import __version__, per_image
from .._io import is_transient
from ..archive.local import observation_of
from ..archive.observation import Observation, Records
from ..cluster import compile_ahead, compute, progress_line, running_client
from ..layout import RunLayout
from ..manifest import ASTROMETRY_COLUMNS, append_manifest, read_manifest, write_manifest
from ..photometry import PhotometryConfig, measure_image
from ..photometry.aperture import ASTROMETRY_ATTR
from ..photometry.motion import MOTION_COLUMNS
from ..source import Source
from ..spherex import calibration
from ..spherex.channels import PIXEL_SCALE_ARCSEC
from ..spherex.l2 import L2File
from ..targets import MemoryTargets, TargetTable, open_targets
from .warmup import compile_loops

#: Targets as the tasks read them: per footprint.
Targets = TargetTable | MemoryTargets

#: Sources within this margin (deg) outside a footprint are still handed to its task.
MARGIN_DEG = 2 * PIXEL_SCALE_ARCSEC / 3600
#: retries of a remote file read in place after a network fault, the first after ~READ_BACKOFF s
READ_RETRIES = 4
READ_BACKOFF = 0.5


def fingerprint(observation: Observation, sources: pd.DataFrame, config: PhotometryConfig,
                neighbours: pd.DataFrame | None = None) -> str:
    """What a per-image file is made from, hashed: the image record (where it was read from
    aside), the target rows measured, the neighbour rows fitted with them, the photometry
    config and the package version."""
    image = {k: v for k, v in asdict(observation).items() if k != "url"}
    made_from = {"image": image, "sources": per_image.rows_digest(sources[_measured_columns(sources, "targetid")]),
                 "config": config.to_dict(), "spxdask": __version__}
    if neighbours is not None:
        made_from["neighbours"] = per_image.rows_digest(neighbours[_measured_columns(neighbours)])
    if config.epsf_calibration is not None:  # the file, not only its folder's name
        made_from["epsf"] = calibration.stamp(config.epsf_calibration, observation.detector)
    return per_image.digest(made_from)


def _measured_columns(rows: pd.DataFrame, *first: str) -> list[str]:
    """The columns of ``rows`` the kernel reads: ``first``, the position and its motion."""
    return [*first, "ra", "dec", *(c for c in MOTION_COLUMNS if c in rows)]


def _check_inputs(targets: Targets, neighbours: Targets | None, config: PhotometryConfig) -> None:
    """Raise before any image is measured when the targets or neighbours move (proper motions
    or parallaxes) but neither a ``ref_epoch`` column nor ``config.catalog_epoch`` says when
    their positions are, or when ``config.epsf_calibration`` names no folder of ePSF files."""
    if config.epsf_calibration is not None:
        calibration.check_folder(config.epsf_calibration)
    for role, catalog in (("targets", targets), ("neighbours", neighbours)):
        carried = catalog.carried if catalog is not None else ()
        moving = [c for c in ("pmra", "pmdec", "parallax") if c in carried]
        if moving and "ref_epoch" not in carried and config.catalog_epoch is None:
            raise ValueError(f"the {role} have {', '.join(moving)} but no ref_epoch column: say when their positions "
                             "are with PhotometryConfig(catalog_epoch=...) (--catalog-epoch; Gaia DR3: 2016.0)")


def _in_image(targets: Targets, observation: Observation, margin_deg: float = MARGIN_DEG) -> pd.DataFrame:
    return targets.in_footprint(observation.corners, margin_deg=margin_deg)


def _neighbours_in_image(neighbours: Targets | None, observation: Observation,
                         config: PhotometryConfig) -> pd.DataFrame | None:
    """The neighbour rows whose PSF can reach the image's pixels (None without a neighbour
    catalog or a PSF fit)."""
    if neighbours is None or not config.psf_fit:
        return None
    return _in_image(neighbours, observation, MARGIN_DEG + (config.psf_fit_radius + 1) * PIXEL_SCALE_ARCSEC / 3600)


def _as_targets(catalog, role: str, output_dir: str | Path) -> Targets:
    """Targets or neighbours as the tasks read them (a file laid out beside ``output_dir``)."""
    if isinstance(catalog, (TargetTable, MemoryTargets)):
        return catalog
    return open_targets(catalog, cache=RunLayout(Path(output_dir).parent).targets, role=role)


def process_single_image(image_path: str | Path, sources: pd.DataFrame | Sequence[Source] | Targets,
                         config: PhotometryConfig, output_dir: str | Path,
                         skip_existing: bool = True, *, neighbours: pd.DataFrame | Targets | None = None) -> Path | None:
    """Measure all ``sources`` that fall in one image and write ``<obs_id>_D<n>.parquet``.

    Parameters
    ----------
    image_path : path or URL
        A SPHEREx L2 file (its identity is read from its headers).
    sources : path, DataFrame (targetid, ra, dec), list of Source, or TargetTable
        Candidate sources; those outside the image are ignored.
    config : PhotometryConfig
    output_dir : path
        Folder of the per-image Parquet files.
    skip_existing : bool
        Return None without work when the output exists and was made from the same image,
        sources, neighbours and config.
    neighbours : path, DataFrame (ra, dec) or TargetTable, optional
        More sources fitted with the targets in the joint PSF fit (a deeper catalog); they
        get no rows.

    Returns
    -------
    Path or None
        The file written (also when no source falls in the image), or None when skipped.
    """
    targets = _as_targets(sources, "targets", output_dir)
    deeper = _as_targets(neighbours, "neighbours", output_dir) if neighbours is not None else None
    _check_inputs(targets, deeper, config)
    with L2File(image_path) as l2:
        observation = observation_of(l2, str(image_path))
        out = Path(output_dir) / per_image.file_name(observation.obs_id, observation.detector)
        mine = _in_image(targets, observation)
        near = _neighbours_in_image(deeper, observation, config)
        made_from = fingerprint(observation, mine, config, near)
        if skip_existing and per_image.recorded_fingerprint(out) == made_from:
            return None
        table = measure_image(l2, mine, config, neighbours=near)
    per_image.write(table, out, targets.targetid_type, fingerprint=made_from, astrometry=_astrometry_of(table))
    return out


def _astrometry_of(table: pd.DataFrame) -> dict | None:
    """The image's astrometry record :func:`measure_image` left on its rows, as a dict."""
    record = table.attrs.get(ASTROMETRY_ATTR)
    return record.to_dict() if record is not None else None


def _extract(image: Observation | str, targets: Targets, neighbours: Targets | None, *, out_dir: str,
             config: PhotometryConfig, tid_type: pa.DataType, skip_existing: bool, run: str,
             storage_options: dict | None = None) -> dict:
    """Measure one image (a record, or a file whose record its headers give); the manifest row.
    A file already made from the same inputs is reused ("skipped"), unless this ``run`` wrote
    it: then the task is running again after its worker was lost, and the image counts as
    measured."""
    t0 = time.perf_counter()
    row = {"image": image.url if isinstance(image, Observation) else image, "n_rows": 0, "error": None, "run": run}
    try:
        if not isinstance(image, Observation):
            with L2File(image, storage_options=storage_options) as l2:
                image = observation_of(l2, image)
        out = Path(out_dir) / per_image.file_name(image.obs_id, image.detector)
        sources = _in_image(targets, image)
        near = _neighbours_in_image(neighbours, image, config)
        made_from = fingerprint(image, sources, config, near)
        row.update(obs_id=image.obs_id, detector=image.detector, version=image.version, output=str(out),
                   n_sources=len(sources), fingerprint=made_from)
        footer = per_image.footer(out) if skip_existing else None
        if footer and per_image.recorded(footer, per_image.FINGERPRINT_KEY) == made_from:
            made_by = per_image.recorded(footer, per_image.RUN_KEY)
            astrometry = json.loads(per_image.recorded(footer, per_image.ASTROMETRY_KEY) or "null")
            row.update(status="ok" if made_by == run else "skipped", n_rows=footer.num_rows, run=made_by)
        else:
            table = _measured(image.url, sources, config, near, storage_options)
            astrometry = _astrometry_of(table)
            per_image.write(table, out, tid_type, fingerprint=made_from, run=run, astrometry=astrometry)
            row.update(status="ok", n_rows=len(table), run=run)
        row.update({ASTROMETRY_COLUMNS[k]: v for k, v in (astrometry or {}).items()})
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


def extract_images(images: Sequence[Observation | str] | Records, sources: pd.DataFrame | Sequence[Source] | Targets,
                   config: PhotometryConfig, output_dir: str | Path, *, skip_existing: bool = True,
                   manifest_path: str | Path | None = None, storage_options: dict | None = None,
                   neighbours: pd.DataFrame | Targets | None = None, client=None) -> int:
    """Measure images with Dask: one ``photometry-<obs_id>_D<n>`` task per image, a bounded
    number in flight, the manifest updated as they finish.

    Parameters
    ----------
    images : sequence of Observation or path / URL, or Records
        Records from a query (``url`` says where to read each file; :class:`Records` makes
        them as the window reaches them) or bare L2 files.
    sources : path, DataFrame (targetid, ra, dec), list of Source, or TargetTable
        The targets (a :class:`~spxdask.targets.TargetTable` is read per image, by each task).
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
    neighbours : path, DataFrame (ra, dec) or TargetTable, optional
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
    manifest = Path(manifest_path) if manifest_path else RunLayout(output_dir.parent).manifest
    targets = _as_targets(sources, "targets", output_dir)
    near = _as_targets(neighbours, "neighbours", output_dir) if neighbours is not None else None
    _check_inputs(targets, near, config)
    measure = functools.partial(_extract, out_dir=str(output_dir), config=config, tid_type=targets.targetid_type,
                                skip_existing=skip_existing, run=uuid.uuid4().hex, storage_options=storage_options)
    count = len(images)
    todo = (image if isinstance(image, Observation) else str(image) for image in images)  # paths as text
    log = _ManifestLog(manifest)
    client = client or running_client()
    try:
        if client is None:
            _measure_locally(todo, measure, targets, near, log)
        elif count:
            compile_ahead(client, compile_loops)
            _measure_on(client, todo, count, measure, targets, near, log)
    finally:  # also when interrupted: every image measured so far is in the manifest
        log.close()
    return log.measured


#: Images in flight per worker thread: every thread stays busy, and the scheduler holds a
#: bounded number of tasks however many images the run has.
IN_FLIGHT_PER_THREAD = 4
#: The manifest is brought up to date with the finished images at most this often (s).
MANIFEST_EVERY = 10.0


class _ManifestLog:
    """The manifest records of the images as they finish, added to the manifest every
    :data:`MANIFEST_EVERY` s (:func:`~spxdask.manifest.append_manifest`) and folded into it at
    the end. A reused file keeps the record of the run that made it (a record is written for it
    only when the manifest has none)."""

    def __init__(self, path: Path):
        self.path = path
        self.known = set(read_manifest(path, columns=["image"])["image"])
        self.pending: list[dict] = []
        self.measured = 0
        self.last = time.monotonic()

    def add(self, row: dict) -> None:
        self.measured += row["status"] == "ok"
        if row["status"] != "skipped" or row["image"] not in self.known:
            self.pending.append({**row, "status": "ok"} if row["status"] == "skipped" else row)
        if time.monotonic() - self.last > MANIFEST_EVERY:
            self.flush()

    def flush(self) -> None:
        append_manifest(self.pending, self.path)
        self.known.update(r["image"] for r in self.pending)
        self.pending = []
        self.last = time.monotonic()

    def close(self) -> None:
        """Fold the records (this run's, and any a killed run left) into the manifest."""
        write_manifest(self.pending, self.path)
        self.pending = []


def _measure_locally(images: Iterator, measure, targets: Targets, neighbours: Targets | None,
                     log: _ManifestLog) -> None:
    """Local threads, a window of images at a time (the targets shared in memory)."""
    window = IN_FLIGHT_PER_THREAD * (os.cpu_count() or 1)
    numbered = enumerate(images)
    while batch := list(itertools.islice(numbered, window)):
        chunk = [dask.delayed(measure, pure=False)(image, targets, neighbours, dask_key_name=f"photometry-{_label(image, k)}")
                 for k, image in batch]
        for row in compute(*chunk):
            log.add(row)


def _measure_on(client, images: Iterator, count: int, measure, targets: Targets, neighbours: Targets | None,
                log: _ManifestLog) -> None:
    """One ``photometry-…`` task per image on ``client``, at most :data:`IN_FLIGHT_PER_THREAD`
    per worker thread submitted at a time, the next submitted as one finishes. The targets (a
    catalog's pixel list, or rows in memory) go to the workers once, scattered, not through
    the scheduler's graph."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:12]
    shared = client.scatter({f"targets-{token}": targets})[f"targets-{token}"]
    near = (client.scatter({f"neighbours-{token}": neighbours})[f"neighbours-{token}"]
            if neighbours is not None else None)
    window = IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))
    todo = iter(enumerate(images))

    def submit(k: int, image) -> Any:
        return client.submit(measure, image, shared, near, key=f"photometry-{_label(image, k)}", pure=False)

    running = as_completed([submit(k, image) for k, image in itertools.islice(todo, window)])
    done = 0
    for future in running:
        log.add(future.result())
        future.release()
        done += 1
        progress_line("photometry: images", done, count)
        for k, image in itertools.islice(todo, 1):
            running.add(submit(k, image))


def _label(image: Observation | str, k: int) -> str:
    if isinstance(image, Observation):
        return Path(per_image.file_name(image.obs_id, image.detector)).stem
    return f"{Path(str(image)).stem}-{k}"


def run_extraction(image_dir: str | Path, sources: pd.DataFrame | Sequence[Source] | Targets, config: PhotometryConfig,
                   output_dir: str | Path, n_workers: int = 12, skip_existing: bool = True, *,
                   manifest_path: str | Path | None = None, neighbours: pd.DataFrame | Targets | None = None,
                   client=None) -> int:
    """Measure every L2 image under ``image_dir`` (recursively) with Dask (reference name).

    Each ``photometry-…`` task reads its file's record from the headers, selects the targets
    in its footprint (read per image from a laid-out catalog, or from rows in memory shared by
    all tasks) and measures them, fitting them jointly with the ``neighbours`` in the footprint.

    Parameters
    ----------
    image_dir : path
        A folder of L2 files.
    sources : path, DataFrame (targetid, ra, dec), list of Source, or TargetTable
        The targets.
    config : PhotometryConfig
        How each image is measured.
    output_dir : path
        The folder of the per-image files.
    n_workers : int
        The reference's pool size, accepted and ignored (the cluster decides; :mod:`spxdask.compat`).
    skip_existing : bool
        Reuse per-image files made from the same image, targets and config.
    manifest_path : path, optional
        Default ``<output_dir>/../manifest.parquet``.
    neighbours : path, DataFrame (ra, dec) or TargetTable, optional
        A deeper catalog whose sources enter the joint PSF fit; they get no rows.
    client : distributed.Client, optional
        Where the tasks run (default: the running Client, else local threads).

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
