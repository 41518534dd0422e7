"""Catalog positions moved to an image's epoch: proper motion and parallax (no Dask).

A catalog with Gaia's columns (``pmra`` = µα* in mas/yr, cos δ included; ``pmdec`` in mas/yr;
optional ``parallax`` in mas; ``ref_epoch`` the Julian year of each row's position) gives each
source's position at its epoch. Forced photometry needs it where the source is when the image
is taken: the position is moved along its space motion to the image's mid-exposure time and
seen from the Earth (SPHEREx's low orbit is 0.00005 au from the geocentre: 0.01 mas for a
star at 1 pc), by ERFA's ``pmpx`` (the IAU SOFA routine) with the Earth's barycentric position
from ``epv00``. Missing values mean no motion (and no parallax); so do rows without a
``ref_epoch`` when ``catalog_epoch`` is not given — unless they move, which is an error.
"""

from __future__ import annotations

import erfa
import numpy as np
import pandas as pd
from astropy.time import Time

#: The catalog columns that describe a source's motion (Gaia's names and units).
MOTION_COLUMNS = ("pmra", "pmdec", "parallax", "ref_epoch")
_MAS = np.pi / (180 * 3600 * 1000)
_J2000_JD = 2451545.0
_JULIAN_YEAR = 365.25


def has_motion(sources: pd.DataFrame) -> bool:
    """Whether ``sources`` carry proper motions (a ``pmra`` or ``pmdec`` column).

    Parameters
    ----------
    sources : DataFrame

    Returns
    -------
    bool
    """
    return "pmra" in sources or "pmdec" in sources


def positions_at(sources: pd.DataFrame, mjd: float, *, catalog_epoch: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sky positions of ``sources`` at ``mjd``, seen from the Earth.

    Parameters
    ----------
    sources : DataFrame
        Columns ra, dec (deg) and, when they move, pmra, pmdec (mas/yr), parallax (mas) and
        ref_epoch (Julian year); a missing (NaN) motion or parallax is none.
    mjd : float
        The time (MJD, UTC), e.g. an image's mid-exposure.
    catalog_epoch : float, optional
        The Julian year of the positions of rows without ``ref_epoch``.

    Returns
    -------
    ra, dec : ndarray
        Degrees; the catalog positions themselves for the rows that do not move.

    Raises
    ------
    ValueError
        When a moving row has no epoch (no ``ref_epoch`` and no ``catalog_epoch``).
    """
    ra = sources["ra"].to_numpy(float)
    dec = sources["dec"].to_numpy(float)
    pmra = _column(sources, "pmra")
    pmdec = _column(sources, "pmdec")
    parallax = _column(sources, "parallax")
    epoch = _column(sources, "ref_epoch", np.nan if catalog_epoch is None else float(catalog_epoch))
    moving = (pmra != 0) | (pmdec != 0) | (parallax != 0)
    if not moving.any():
        return ra, dec
    undated = moving & ~np.isfinite(epoch)
    if undated.any():
        raise ValueError(f"{int(undated.sum())} source(s) with a proper motion or parallax have no epoch: give the "
                         "catalog a ref_epoch column (Julian year) or set PhotometryConfig.catalog_epoch")
    when = Time(mjd, format="mjd", scale="utc").tdb
    _, barycentric = erfa.epv00(when.jd1, when.jd2)
    years = ((when.jd1 - _J2000_JD) + when.jd2) / _JULIAN_YEAR + 2000.0 - epoch[moving]
    rc, dc = np.radians(ra[moving]), np.radians(dec[moving])
    direction = erfa.pmpx(rc, dc, pmra[moving] * _MAS / np.cos(dc), pmdec[moving] * _MAS, parallax[moving] / 1000.0,
                          0.0, years, barycentric["p"])
    lon, lat = erfa.c2s(direction)
    ra, dec = ra.copy(), dec.copy()
    ra[moving] = np.degrees(lon) % 360.0
    dec[moving] = np.degrees(lat)
    return ra, dec


def _column(sources: pd.DataFrame, name: str, missing: float = 0.0) -> np.ndarray:
    """``sources[name]`` as floats, ``missing`` where absent or NaN."""
    if name not in sources:
        return np.full(len(sources), missing)
    values = pd.to_numeric(sources[name], errors="coerce").to_numpy(float, na_value=np.nan)
    return np.where(np.isfinite(values), values, missing)
