"""Dask orchestration of the drizzle: one task per image returning a partial cube, combined by
``split_every``-way sums, so no worker holds more than about split_every + 1 partials.

On a distributed client the sums follow the data: each worker keeps one running sum, to which
the partials it made are added ``split_every - 1`` at a time, and only the workers' final sums
move (moving partials between workers cost a fixed tree a quarter of its time on two workers;
a sum is as large as the cube's planes the images reach, so one at a time bounds a worker's
memory). Without one, a fixed tree of delayed sums runs on local
threads."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
from dask.delayed import Delayed

from ..cluster import gather, progress_line
from ..spherex.l2 import L2File
from .accumulate import OutputGrid, PartialCube, combine, partial_cube, rejected
from .config import Drizzle3DConfig

if TYPE_CHECKING:
    from distributed import Future


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
    names = (f"drizzle-combine-D{grid.detector}-{token}-{n}" for n in itertools.count())
    return _tree(level, config.split_every, lambda group: dask.delayed(combine, pure=True)(*group, dask_key_name=next(names)))


def reduce_partials(jobs: dict[int, tuple[Sequence[str], OutputGrid]], config: Drizzle3DConfig, client,
                    storage_options: dict | None = None) -> dict[int, PartialCube]:
    """The summed partial cube of each detector's images, ``jobs`` = {detector: (paths, grid)},
    computed on the distributed ``client``: tasks ``drizzle-partial-D<n>-…`` per image and
    ``drizzle-combine-D<n>-…`` per sum; each worker's partials are added to its running sum
    ``split_every - 1`` at a time, on that worker, and the workers' sums summed at the end."""
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
    sums: dict[tuple[int, str], _WorkerSum] = {}
    owner: dict[str, _WorkerSum] = {}  # a running sum's key: whose it is (wherever it lands)
    n_sums = 0

    def sum_on_worker(group: list, det: int):
        nonlocal n_sums
        n_sums += 1
        # before the images queued on the worker: else the partials pile up while they run
        f = client.submit(combine, *group, key=f"drizzle-combine-D{det}-{n_sums}-{group[0].key[-8:]}", priority=1)
        detector_of[f.key] = det
        return f

    done, n_images, n_done = as_completed(futures), len(futures), 0
    del futures  # a partial is released once summed
    for future in done:
        det = detector_of[future.key]
        if future.key in owner:
            held = owner.pop(future.key)
            held.total, held.pending = future, False
        else:
            n_done += 1
            progress_line("drizzle: images", n_done, n_images)
            where = client.who_has(future).get(future.key) or ("",)
            held = sums.setdefault((det, where[0]), _WorkerSum())
            held.partials.append(future)
        group = held.to_sum()
        if len(group) >= config.split_every:
            f = sum_on_worker(group, det)
            owner[f.key] = held
            held.total, held.pending, held.partials = None, True, []
            done.add(f)
    future = None  # the last one landed, and (below) the last group, would keep a running sum alive
    # each worker's remainder added to its sum where they lie, then the workers' sums
    level: dict[int, list] = {}
    for (det, _), held in sums.items():
        group = held.to_sum()
        if group:
            level.setdefault(det, []).append(group[0] if len(group) == 1 else sum_on_worker(group, det))
    sums.clear()
    group = []
    totals = {det: _tree(items, config.split_every, functools.partial(sum_on_worker, det=det)) for det, items in level.items()}
    level.clear()
    return dict(zip(totals, gather(list(totals.values()), client)))


def _tree(items: list, k: int, add: Callable[[list], Any]) -> Any:
    """``items`` summed ``k`` at a time, level by level, by ``add(group)`` (a group of one goes
    up as it is)."""
    while len(items) > 1:
        items = [g[0] if len(g) == 1 else add(g) for g in (items[i:i + k] for i in range(0, len(items), k))]
    return items[0]


@dataclass
class _WorkerSum:
    """What one worker holds of a detector's cube: its running sum (one at a time: a sum is as
    large as the cube's planes the images reach, so two would double the worker's memory),
    whether it is being made, and the partials landed since."""

    total: Future | None = None
    pending: bool = False
    partials: list = field(default_factory=list)

    def to_sum(self) -> list:
        """The futures to sum now: the running sum and the partials landed since (none while
        the running sum is being made)."""
        return [] if self.pending else [self.total] * (self.total is not None) + self.partials
