"""Dask orchestration of the drizzle: one task per image returning a partial cube, combined by
``split_every``-way sums, so no worker holds more than about split_every + 1 partials.

On a distributed client the sums follow the data: as partials finish, ``split_every`` of them
held by one worker are combined on that worker, and only the workers' final sums move (a
partial is about as large as the cube; moving them between workers cost the fixed tree a
quarter of its time on two workers). Without one, a fixed tree of delayed sums runs on local
threads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dask
from dask.delayed import Delayed

from ..cluster import progress_line
from ..spherex.l2 import L2File
from .accumulate import OutputGrid, PartialCube, combine, partial_cube, rejected
from .config import Drizzle3DConfig


def image_partial(path: str, grid: OutputGrid, config: Drizzle3DConfig, storage_options: dict | None = None) -> PartialCube:
    """One image's partial cube; an unreadable or foreign image contributes nothing and is
    recorded as rejected with its reason (the run goes on)."""
    try:
        with L2File(path, storage_options=storage_options) as l2:
            if l2.meta.detector != grid.detector:
                return rejected(grid.zgrid.n_z, path, f"detector D{l2.meta.detector}, not D{grid.detector}")
            return partial_cube(l2, grid, config)
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        return rejected(grid.zgrid.n_z, path, f"{type(exc).__name__}: {exc}")


def tree_partials(paths: Sequence[str], grid: OutputGrid, config: Drizzle3DConfig,
                  storage_options: dict | None = None) -> Delayed:
    """The delayed sum of the partial cubes of ``paths``, reduced ``config.split_every`` at a
    time. The grid is one shared key; tasks are named drizzle-partial-* / drizzle-combine-*."""
    token = dask.base.tokenize(sorted(paths), grid.detector, config.to_json())[:8]
    shared = dask.delayed(grid, pure=True, name=f"drizzle-grid-D{grid.detector}-{token}")
    level = [dask.delayed(image_partial, pure=True)(p, shared, config, storage_options,
                                                    dask_key_name=f"drizzle-partial-D{grid.detector}-{Path(p).stem}-{token}")
             for p in paths]
    depth = 0
    while len(level) > 1:
        k = config.split_every
        level = [dask.delayed(combine, pure=True)(*level[i:i + k],
                                                       dask_key_name=f"drizzle-combine-D{grid.detector}-{token}-{depth}-{i // k}")
                 for i in range(0, len(level), k)]
        depth += 1
    return level[0]


def reduce_partials(jobs: dict[int, tuple[Sequence[str], OutputGrid]], config: Drizzle3DConfig, client,
                    storage_options: dict | None = None) -> dict[int, PartialCube]:
    """The summed partial cube of each detector's images, ``jobs`` = {detector: (paths, grid)},
    computed on the distributed ``client``: tasks ``drizzle-partial-D<n>-…`` per image and
    ``drizzle-combine-D<n>-…`` per sum, each sum on the worker holding its inputs."""
    from distributed import as_completed

    futures, detector_of = [], {}
    for det, (paths, grid) in jobs.items():
        token = dask.base.tokenize(sorted(paths), det, config.to_json())[:8]
        shared = client.scatter(grid, hash=False)
        for p in paths:
            f = client.submit(image_partial, p, shared, config, storage_options,
                              key=f"drizzle-partial-D{det}-{Path(p).stem}-{token}")
            futures.append(f)
            detector_of[f.key] = det
    held: dict[tuple[int, str], list] = {}
    n_sums = 0

    def sum_on_worker(group: list, det: int):
        nonlocal n_sums
        n_sums += 1
        f = client.submit(combine, *group, key=f"drizzle-combine-D{det}-{n_sums}-{group[0].key[-8:]}")
        detector_of[f.key] = det
        return f

    done, n_images, n_done = as_completed(futures), len(futures), 0
    del futures  # a partial is released once summed
    for future in done:
        det = detector_of[future.key]
        if future.key.startswith("drizzle-partial"):
            n_done += 1
            progress_line("drizzle: images", n_done, n_images)
        where = client.who_has(future).get(future.key) or ("",)
        group = held.setdefault((det, where[0]), [])
        group.append(future)
        if len(group) == config.split_every:
            held[(det, where[0])] = []
            done.add(sum_on_worker(group, det))
    # each worker's remainder summed where it lies, then the workers' sums
    per_detector: dict[int, list] = {}
    for (det, _), group in held.items():
        if group:
            per_detector.setdefault(det, []).append(group[0] if len(group) == 1 else sum_on_worker(group, det))
    totals = {det: group[0] if len(group) == 1 else sum_on_worker(group, det) for det, group in per_detector.items()}
    return dict(zip(totals, client.gather(list(totals.values()))))
