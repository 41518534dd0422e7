"""Drizzle3D orchestration: query the region (its polygon, not its centre) → files (read in
place, a mirror, or fetched) → per-detector trees of partial cubes, detectors in parallel →
FITS per detector (the reference's 7 HDUs, then INPUTS)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from .. import cluster
from .._io import is_remote, write_parquet_atomic
from ..archive.fetch import FetchConfig, fetch
from ..archive.local import mirror_path, named_detector
from ..archive.open import open_archive
from ..archive.query import RegionQuery
from ..geometry import grid_corners
from ..layout import RunLayout
from .accumulate import OutputGrid, PartialCube, combine, rejected
from .config import Drizzle3DConfig
from .cube import DrizzleCube
from .grid import build_output_wcs, output_grid
from .io import save_cube
from .reduce import reduce_partials, tree_partials
from .warmup import compile_loops


def cube_path(config: Drizzle3DConfig, detector: int) -> Path:
    return config.output_dir / f"drizzle_D{detector}.fits"


def rejected_path(config: Drizzle3DConfig, detector: int) -> Path:
    """``drizzle_D<n>_rejected.parquet``: the images of a cube that contributed nothing, why."""
    return config.output_dir / f"drizzle_D{detector}_rejected.parquet"


def existing_cubes(config: Drizzle3DConfig) -> list[Path]:
    """The cubes of ``config``'s detectors already in its output folder."""
    detectors = [config.detector] if config.detector else range(1, 7)
    return [cube_path(config, d) for d in detectors if cube_path(config, d).exists()]


def _check_outputs(config: Drizzle3DConfig) -> None:
    existing = existing_cubes(config)
    if existing and not config.overwrite:
        raise FileExistsError(f"output exists: {', '.join(map(str, existing))} (set overwrite=True to replace)")


class DrizzleResult(dict[int, Path]):
    """What :func:`drizzle` made: ``{detector: cube path}``, as the reference's answer, with the
    images that contributed nothing.

    Parameters
    ----------
    cubes : dict
        {detector: path of its cube}, for each detector some image contributed to.
    rejected : dict
        {detector: [(image, reason), ...]}: the images of each detector's box that contributed
        nothing (also listed in ``drizzle_D<n>_rejected.parquet``), why.
    """

    def __init__(self, cubes: dict[int, Path], rejected: dict[int, list[tuple[str, str]]]):
        super().__init__(cubes)
        self.rejected = rejected

    @property
    def cubes(self) -> dict[int, Path]:
        """{detector: path of its cube}."""
        return dict(self)


def _finish(partial, grid: OutputGrid, config: Drizzle3DConfig) -> DrizzleCube:
    """Write the cube of a summed partial (when something contributed) and its list of rejected
    images (removing an earlier run's when there is none); the cube."""
    cube = DrizzleCube.from_partial(partial, grid, config)
    listed = rejected_path(config, grid.detector)
    if cube.rejected:
        write_parquet_atomic(pd.DataFrame(cube.rejected, columns=["image", "reason"]), listed)
    else:
        listed.unlink(missing_ok=True)  # an earlier run's list
    if (cube.weight_total > 0).any():
        save_cube(cube, cube_path(config, grid.detector), overwrite=True)
    return cube


def drizzle_detector(fits_paths: list, config: Drizzle3DConfig, detector: int, output_wcs=None, *,
                     storage_options: dict | None = None, client=None) -> Path | None:
    """Drizzle the given files of one detector into ``drizzle_D<n>.fits`` (reference name).

    Images of other detectors, unreadable or non-overlapping images are rejected (listed in
    ``drizzle_D<n>_rejected.parquet``), never fatal.

    Parameters
    ----------
    fits_paths : list
        L2 files (paths or URLs).
    config : Drizzle3DConfig
        The box and how the cube is made.
    detector : int
        The detector.
    output_wcs : WCS, optional
        Default: :func:`build_output_wcs` of ``config``.
    storage_options : dict, optional
        fsspec options for remote files.
    client : distributed.Client, optional
        Where the tasks run (default: the running Client, else local threads).

    Returns
    -------
    Path or None
        The cube, or None when nothing contributed.
    """
    _check_outputs(replace(config, detector=detector))
    grid = output_grid(config, detector, output_wcs)
    (partial,) = _sums({detector: ([str(p) for p in fits_paths], grid)}, config, client, storage_options).values()
    cube = _finish(partial, grid, config)
    return cube_path(config, detector) if (cube.weight_total > 0).any() else None


def _sums(jobs: dict, config: Drizzle3DConfig, client, storage_options: dict | None = None) -> dict:
    """{detector: summed partial cube} of ``jobs`` = {detector: (paths, grid)}: summed where
    the partials lie on a distributed client, by a tree of delayed sums on local threads
    otherwise."""
    client = client or cluster.running_client()
    if client is not None:
        cluster.compile_ahead(client, compile_loops)
        return reduce_partials(jobs, config, client, storage_options)
    trees = [tree_partials(paths, grid, config, storage_options) for paths, grid in jobs.values()]
    return dict(zip(jobs, cluster.compute(*trees)))


def _files(config: Drizzle3DConfig, client) -> tuple[dict[int, list[str]], dict[int, list[tuple[str, str]]]]:
    """The files to drizzle per detector, and per detector the archive files that could belong
    to the cube but cannot be had: unreadable in the archive (the detector from their name;
    every detector asked for when the name tells none) or failed downloads, with the reason."""
    corners = grid_corners(build_output_wcs(config), (config.output_ny(), config.output_nx()))
    detectors = (config.detector,) if config.detector else tuple(range(1, 7))
    query = RegionQuery(polygon=tuple(map(tuple, corners)), bands=(config.detector,) if config.detector else None,
                        mjd_range=config.mjd_range, max_images=config.max_images)
    remote = bool(config.archive) and is_remote(str(config.archive))
    found = open_archive(archive=config.archive, tap_url=config.tap_url, run_dir=config.output_dir,
                         index_path=config.archive_index, storage_options=config.storage_options,
                         client=client).query(query)
    frame = found.frame
    lost: dict[int, list[tuple[str, str]]] = {}
    for url, error in found.unreadable:
        det = named_detector(url)
        for d in [det] if det else detectors:
            lost.setdefault(d, []).append((url, f"unreadable in the archive: {error}"))
    if config.data_mirror is not None:
        paths = [mirror_path(u, config.data_mirror) for u in frame["url"]]
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} file(s) missing from the mirror {config.data_mirror}, e.g. {missing[0]}")
    elif config.archive and not remote:
        paths = list(frame["url"])  # a local archive is read in place
    else:
        result = fetch(found.to_bag(), RunLayout(config.output_dir).images, FetchConfig(concurrency=config.download_workers),
                       storage_options=config.storage_options, client=client)
        ok = result["status"] != "failed"
        paths = list(result["path"].where(ok))
        for det, url, error in zip(result["detector"][~ok], result["url"][~ok], result["error"][~ok]):
            lost.setdefault(int(det), []).append((url, f"download failed: {error}"))
    out: dict[int, list[str]] = {}
    for det, path in zip(frame["detector"], paths):
        if isinstance(path, str):
            out.setdefault(int(det), []).append(path)
    return out, lost


def drizzle(config: Drizzle3DConfig, *, client=None) -> DrizzleResult:
    """Query → files → one cube per detector (detectors in parallel) (reference name).

    Existing outputs are detected before anything is computed (``FileExistsError`` unless
    ``overwrite``).

    Parameters
    ----------
    config : Drizzle3DConfig
        The box, the detectors and where the images come from.
    client : distributed.Client, optional
        Where every task runs (index, fetch, partial cubes). Default: the running Client,
        else local threads (:func:`spxdask.cluster.compute`).

    Returns
    -------
    DrizzleResult
        {detector: path of its cube}, for each detector some image contributed to (the
        reference's answer), and its ``rejected`` images per detector, with the reasons.
    """
    _check_outputs(config)
    files, lost = _files(config, client)
    grids = {det: output_grid(config, det) for det in sorted(set(files) | set(lost))}
    with cluster.run_context("drizzle", RunLayout(config.output_dir).performance_report("drizzle"), client=client):
        partials = _sums({d: (files[d], grids[d]) for d in files}, config, client)
    cubes, rejections = {}, {}
    for det, grid in grids.items():
        n_z = grid.zgrid.n_z
        partial = combine(partials.get(det, PartialCube.empty(n_z, n_inputs=0)),
                          *(rejected(n_z, url, reason) for url, reason in lost.get(det, [])))
        cube = _finish(partial, grid, config)
        if (cube.weight_total > 0).any():
            cubes[det] = cube_path(config, det)
        if cube.rejected:
            rejections[det] = [(str(image), str(reason)) for image, reason in cube.rejected]
    return DrizzleResult(cubes, rejections)
