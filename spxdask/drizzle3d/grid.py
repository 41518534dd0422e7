"""The output spatial grid: a TAN projection centred on the region.

Convention: output pixel (x, y) (0-based) is centred at WCS pixel coordinate (x, y) with
origin 0, i.e. covers [x - 0.5, x + 0.5]; CRPIX puts the region centre at the geometric centre
of the grid.
"""

from __future__ import annotations

from astropy.wcs import WCS

from .accumulate import OutputGrid
from .config import Drizzle3DConfig
from .spectral import z_grid_for


def build_output_wcs(config: Drizzle3DConfig) -> WCS:
    """2-D RA---TAN / DEC--TAN WCS, pixel scale ``config.pixscale``, north up, east left,
    CRPIX = (nx/2 + 0.5, ny/2 + 0.5) (1-based: the geometric centre).

    Parameters
    ----------
    config : Drizzle3DConfig
        The box and pixel scale.

    Returns
    -------
    WCS
    """
    w = WCS(naxis=2)
    s = config.pixscale / 3600
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [config.center_ra, config.center_dec]
    w.wcs.crpix = [config.output_nx() / 2 + 0.5, config.output_ny() / 2 + 0.5]
    w.wcs.cdelt = [-s, s]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (config.output_nx(), config.output_ny())
    return w


def output_grid(config: Drizzle3DConfig, detector: int, output_wcs: WCS | None = None) -> OutputGrid:
    """The grid of one detector's cube: spatial WCS and shape, spectral planes.

    Parameters
    ----------
    config : Drizzle3DConfig
        The box, pixel scale and spectral sampling.
    detector : int
        The detector, 1-6 (its channels make the planes).
    output_wcs : WCS, optional
        Default: :func:`build_output_wcs` of ``config``.

    Returns
    -------
    OutputGrid
    """
    return OutputGrid(output_wcs or build_output_wcs(config), (config.output_ny(), config.output_nx()),
                      z_grid_for(detector, config.z_oversample, config.z_lambda_edges), detector)
