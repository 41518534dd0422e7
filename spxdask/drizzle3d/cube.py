"""The finished accumulation buffers of one detector's cube (reference name ``DrizzleCube``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from .accumulate import ALL_BITS, OFFSETS, OutputGrid, PartialCube, neighbour_slices
from .config import Drizzle3DConfig
from .spectral import ZGrid


def correlation_columns() -> list[str]:
    """Names of the WAVELENGTH table columns holding the correlation model, one per offset."""
    return [f"CORR_{dy}{'M' if dx < 0 else ''}{abs(dx)}" for dy, dx in OFFSETS]


@dataclass
class DrizzleCube:
    """Accumulation buffers, shape (n_z, n_y, n_x) (FITS order, spectral axis first).

    Parameters
    ----------
    wcs : WCS
        The celestial grid.
    pixscale : float
        Output pixel scale (arcsec).
    zgrid : ZGrid
        The planes.
    flux_weighted : ndarray
        Σ w f per voxel.
    weight_total : ndarray
        Σ w per voxel.
    var_accum : ndarray
        Σ w² σ² per voxel.
    count_map : ndarray
        Distinct contributing images per voxel (int32: no wrap).
    and_mask, or_mask : ndarray
        AND and OR of the contributing pixels' FLAGS.
    config : Drizzle3DConfig
        How the cube was made.
    detector : int
        Its detector.
    n_inputs, n_rejected : int
        Images that contributed, and that did not.
    plane_inputs : ndarray, optional
        Images contributing to each plane.
    rejected : list
        (image, reason) of each rejected image.
    cov_accum : ndarray
        (len(OFFSETS), n_z, n_y, n_x): the noise shared by each voxel and its neighbour at
        each offset, Σ w w' σ².
    inputs : list of InputFrame
        The images that contributed: obs_id, detector, version, weight and where each was
        read (the file's ``INPUTS`` table).
    stored : dict, optional
        A cube read from its file (:func:`~spxdask.drizzle3d.load_cube`): the file's
        ``header`` (PRIMARY), ``sci_header`` and ``wavelength`` table. Such a cube holds its
        planes as sums of weight 1 (the file keeps no weights) and answers the reference's
        ``load_cube`` keys: ``cube["sci"]``, ``cube["header"]``, ...
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
    cov_accum: np.ndarray = field(default_factory=lambda: np.zeros((len(OFFSETS), 0, 0, 0), np.float32))
    inputs: list = field(default_factory=list)
    stored: dict | None = field(default=None, repr=False)

    #: The keys of the reference's ``load_cube`` dict, which a cube read from its file answers.
    KEYS = ("header", "sci", "variance", "and_mask", "or_mask", "count", "wavelength", "sci_header")

    def __getitem__(self, key: str):
        """A value of the reference's ``load_cube`` dict (:data:`KEYS`), for a cube read from its file."""
        if self.stored is None:
            raise TypeError("only a cube read by load_cube answers the reference's keys; "
                            "spxdask.drizzle3d.io.as_loaded(cube) gives them for any cube")
        arrays = {"sci": lambda: self.sci, "variance": lambda: self.variance, "and_mask": lambda: self.final_and_mask,
                  "or_mask": lambda: self.or_mask, "count": lambda: self.count_map}
        return arrays[key]() if key in arrays else self.stored[key]  # the one asked for, computed

    def keys(self) -> tuple[str, ...]:
        """:data:`KEYS` (so that ``dict(cube)`` gives the reference's dict)."""
        return self.KEYS

    @classmethod
    def create(cls, wcs: WCS, pixscale: float, zgrid: ZGrid, config: Drizzle3DConfig, detector: int) -> DrizzleCube:
        """An empty cube (zero sums, all-ones AND mask).

        Parameters
        ----------
        wcs : WCS
        pixscale : float
        zgrid : ZGrid
        config : Drizzle3DConfig
        detector : int
            As the fields of the same names.

        Returns
        -------
        DrizzleCube
        """
        shape = (zgrid.n_z, config.output_ny(), config.output_nx())
        return cls(wcs, pixscale, zgrid, np.zeros(shape), np.zeros(shape), np.zeros(shape),
                   np.zeros(shape, np.int32), np.full(shape, ALL_BITS, np.uint32), np.zeros(shape, np.uint32),
                   config, detector, plane_inputs=np.zeros(zgrid.n_z, np.int32),
                   cov_accum=np.zeros((len(OFFSETS), *shape), np.float32))

    @classmethod
    def from_partial(cls, partial: PartialCube, grid: OutputGrid, config: Drizzle3DConfig) -> DrizzleCube:
        """Place a reduced partial cube into the full grid.

        Parameters
        ----------
        partial : PartialCube
            The sum of the images' partial cubes.
        grid : OutputGrid
            The cube's grid.
        config : Drizzle3DConfig
            How the cube is made.

        Returns
        -------
        DrizzleCube
        """
        cube = cls.create(grid.wcs, config.pixscale, grid.zgrid, config, grid.detector)
        for plane in partial.planes():
            at = (plane.z, plane.rows, plane.cols)
            cube.flux_weighted[at] = plane.of(partial.flux)
            cube.weight_total[at] = plane.of(partial.weight)
            cube.var_accum[at] = plane.of(partial.var)
            cube.count_map[at] = plane.of(partial.count)
            cube.and_mask[at] = plane.of(partial.and_mask)
            cube.or_mask[at] = plane.of(partial.or_mask)
            cube.cov_accum[(slice(None), *at)] = plane.of(partial.cov)
        cube.plane_inputs = partial.plane_inputs.copy()
        cube.n_inputs, cube.n_rejected, cube.rejected = partial.n_inputs, partial.n_rejected, list(partial.rejected)
        cube.inputs = list(partial.inputs)
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

    @property
    def correlation(self) -> np.ndarray:
        """The noise-correlation model, (n_z, len(OFFSETS)): per plane and offset d, the
        correlation of neighbouring voxels, Σ_o C_d(o) / (W_o W_o+d) over Σ_o sqrt(V_o V_o+d)
        (the average that enters the variance of a sum over an aperture). A cube read from its
        file gives its WAVELENGTH table's (zeros for a file written without one)."""
        n_z, ny, nx = self.weight_total.shape
        if self.stored is not None:
            table = self.stored["wavelength"]
            names = correlation_columns()
            if not all(n in table.dtype.names for n in names):
                return np.zeros((n_z, len(names)))
            return np.nan_to_num(np.column_stack([np.asarray(table[n], float) for n in names]))
        out = np.zeros((n_z, len(OFFSETS)))
        for z in range(n_z):  # plane by plane: temporaries of one plane only
            w, v = self.weight_total[z], self.var_accum[z]
            for k, (dy, dx) in enumerate(OFFSETS):
                a, b = neighbour_slices(dy, dx, ny, nx)
                both = (w[a] > 0) & (w[b] > 0)
                if not both.any():
                    continue
                ww = w[a][both] * w[b][both]
                scale = (np.sqrt(v[a][both] * v[b][both]) / ww).sum()
                out[z, k] = (self.cov_accum[k, z][a][both] / ww).sum() / scale if scale > 0 else 0.0
        return out

