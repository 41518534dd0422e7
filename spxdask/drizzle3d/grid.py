"""The output spatial grid: a TAN projection centred on the region.

Convention: output pixel (x, y) (0-based) is centred at WCS pixel coordinate (x, y) with
origin 0, i.e. covers [x - 0.5, x + 0.5]; CRPIX puts the region centre at the geometric centre
of the grid.
"""

from __future__ import annotations

from astropy.wcs import WCS

from .config import Drizzle3DConfig


def build_output_wcs(config: Drizzle3DConfig) -> WCS:
    """2-D RA---TAN / DEC--TAN WCS, pixel scale ``config.pixscale``, north up, east left,
    CRPIX = (nx/2 + 0.5, ny/2 + 0.5) (1-based: the geometric centre)."""
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
