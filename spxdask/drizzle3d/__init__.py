"""Drizzle3D: flux-conserving (λ, y, x) cubes from SPHEREx L2 images, as per-image partial
cubes summed by a Dask tree reduction (the reference's ``spxquery.drizzle3d`` names)."""

from .accumulate import OutputGrid, PartialCube, combine, partial_cube
from .config import Drizzle3DConfig
from .cube import DrizzleCube
from .grid import build_output_wcs
from .io import load_cube, save_cube
from .pipeline import DrizzleResult, drizzle, drizzle_detector
from .spatial import compute_spatial_mapping
from .spectral import ZGrid, build_z_grid_custom, build_z_grid_native, build_z_grid_oversampled
from .spectrum import extract_spectrum

__all__ = ["Drizzle3DConfig", "DrizzleCube", "DrizzleResult", "OutputGrid", "PartialCube", "ZGrid", "build_output_wcs",
           "build_z_grid_custom", "build_z_grid_native", "build_z_grid_oversampled", "combine",
           "compute_spatial_mapping", "drizzle", "drizzle_detector", "extract_spectrum", "load_cube", "partial_cube", "save_cube"]
