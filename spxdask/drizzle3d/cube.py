"""The finished accumulation buffers of one detector's cube (reference name ``DrizzleCube``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from .accumulate import ALL_BITS, OutputGrid, PartialCube
from .config import Drizzle3DConfig
from .spectral import ZGrid


@dataclass
class DrizzleCube:
    """Accumulation buffers, shape (n_z, n_y, n_x) (FITS order, spectral axis first).

    ``count_map`` counts distinct contributing images per voxel (int32: no wrap);
    ``plane_inputs`` the images contributing to each plane.
    """

    wcs: WCS
    pixscale: float
    zgrid: ZGrid
    flux_weighted: np.ndarray
    weight_total: np.ndarray
    var_accum: np.ndarray
    count_map: np.ndarray
    and_mask: np.ndarray
    or_mask: np.ndarray
    config: Drizzle3DConfig
    detector: int
    n_inputs: int = 0
    n_rejected: int = 0
    plane_inputs: np.ndarray | None = None
    rejected: list = field(default_factory=list)

    @classmethod
    def create(cls, wcs: WCS, pixscale: float, zgrid: ZGrid, config: Drizzle3DConfig, detector: int) -> DrizzleCube:
        """An empty cube (zero sums, all-ones AND mask)."""
        shape = (zgrid.n_z, config.output_ny(), config.output_nx())
        return cls(wcs, pixscale, zgrid, np.zeros(shape), np.zeros(shape), np.zeros(shape),
                   np.zeros(shape, np.int32), np.full(shape, ALL_BITS, np.uint32), np.zeros(shape, np.uint32),
                   config, detector, plane_inputs=np.zeros(zgrid.n_z, np.int32))

    @classmethod
    def from_partial(cls, partial: PartialCube, grid: OutputGrid, config: Drizzle3DConfig) -> DrizzleCube:
        """Place the reduced partial into the full grid."""
        cube = cls.create(grid.wcs, config.pixscale, grid.zgrid, config, grid.detector)
        if partial.flux.size:
            box = partial.box
            cube.flux_weighted[box] = partial.flux
            cube.weight_total[box] = partial.weight
            cube.var_accum[box] = partial.var
            cube.count_map[box] = partial.count
            cube.and_mask[box] = partial.and_mask
            cube.or_mask[box] = partial.or_mask
        cube.plane_inputs = partial.plane_inputs.copy()
        cube.n_inputs, cube.n_rejected, cube.rejected = partial.n_inputs, partial.n_rejected, list(partial.rejected)
        return cube

    @property
    def sci(self) -> np.ndarray:
        """Σw·f / Σw (MJy/sr), NaN where nothing contributed."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.weight_total > 0, self.flux_weighted / self.weight_total, np.nan).astype(np.float32)

    @property
    def variance(self) -> np.ndarray:
        """Σw²σ² / (Σw)² ((MJy/sr)²), NaN where nothing contributed."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.weight_total > 0, self.var_accum / self.weight_total**2, np.nan).astype(np.float32)

    @property
    def final_and_mask(self) -> np.ndarray:
        """AND of the contributing flags; 0 where nothing contributed."""
        return np.where(self.count_map > 0, self.and_mask, 0).astype(np.uint32)
