"""Dask orchestration of the drizzle: one task per image returning a partial cube, combined by
a tree of ``split_every``-way sums, so no worker holds more than about split_every + 1
partials."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import dask
from dask.delayed import Delayed

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


def combine_many(*partials: PartialCube) -> PartialCube:
    return functools.reduce(combine, partials)


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
        level = [dask.delayed(combine_many, pure=True)(*level[i:i + k],
                                                       dask_key_name=f"drizzle-combine-D{grid.detector}-{token}-{depth}-{i // k}")
                 for i in range(0, len(level), k)]
        depth += 1
    return level[0]
