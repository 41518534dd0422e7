"""Models of extended sources: Tractor's galaxy profiles through the file's PSF (no Dask).

A catalog in the Legacy Surveys' Tractor convention says what each source looks like: ``type``
PSF (a point), REX (round exponential), EXP (exponential), DEV (de Vaucouleurs, Sérsic n = 4)
or SER (Sérsic, index ``sersic``); ``shape_r`` the half-light radius (arcsec) along the major
axis; ``shape_e1``, ``shape_e2`` the ellipticity: |e| = hypot(e1, e2), axis ratio
b/a = (1 - |e|) / (1 + |e|), major axis at θ = ½ atan2(e2, e1) from East towards North. Profiles
are cut at :data:`TRUNCATE` half-light radii and hold unit total flux; their fitted amplitude
is the source's total flux.

A galaxy's model on the native pixels is its profile convolved with the effective PSF of the
zone (the PSF integrated over a native pixel), sampled at the pixel centres. It is computed in
Fourier space, where each factor is known: the effective PSF's transform from the file's
samples (:meth:`~spxdask.spherex.psf.ZonedPSF.transform`), the circular profile's transform by
a Hankel transform tabulated once per Sérsic index, stretched by the source's shape through the
local WCS, and the sub-pixel position as a phase. The inverse transform is evaluated at the
(2m+1)² pixel centres only, as two small matrix products per source: the cost does not grow
with the galaxy's size.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy.special import gammaincinv, j0

#: Profiles are cut at this many half-light radii.
TRUNCATE = 8.0
#: Sérsic index of each galaxy type (SER: the ``sersic`` column).
SERSIC = {"REX": 1.0, "EXP": 1.0, "DEV": 4.0}
#: Types modelled as points (DUP: a Gaia source the Legacy Surveys fitted with another model).
POINT_TYPES = ("PSF", "DUP")
#: The shape columns (Tractor's names and units).
SHAPE_COLUMNS = ("type", "shape_r", "shape_e1", "shape_e2", "sersic")
#: Frequencies (cycles per native pixel) beyond this carry no light of SPHEREx's effective PSF.
MAX_FREQUENCY = 2.5
#: Sérsic profiles are tabulated every SERSIC_STEP in n (linear between them: < 1e-3 of the total).
SERSIC_STEP = 0.2
#: The profiles' transforms are tabulated at these frequencies (cycles per half-light radius):
#: finely where they fall, coarsely in their tails.
_KAPPA = np.concatenate([np.arange(0, 8, 0.01), np.arange(8, 30.01, 0.1)])
_CHUNK = 32


def models(sources: pd.DataFrame) -> np.ndarray:
    """Each source's model: its Tractor ``type`` when it is a galaxy with a usable shape, else
    ``"PSF"`` (also for every source of a catalog without a ``type`` column).

    Parameters
    ----------
    sources : DataFrame

    Returns
    -------
    ndarray of str
    """
    if "type" not in sources:
        return np.full(len(sources), "PSF", dtype=object)
    kind = sources["type"].astype("string").str.strip().str.upper().fillna("PSF").to_numpy(object)
    radius = _numbers(sources, "shape_r")
    sersic = _numbers(sources, "sersic")
    usable = np.isin(kind, list(SERSIC)) | ((kind == "SER") & (sersic >= 0.2) & (sersic <= 8.0))
    return np.where(usable & (radius > 0), kind, "PSF")


def shape_parameters(sources: pd.DataFrame, model: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sérsic index, half-light radius (arcsec), axis ratio and major-axis angle (radians from
    East towards North) of each source whose ``model`` is a galaxy type.

    Parameters
    ----------
    sources : DataFrame
    model : ndarray of str
        :func:`models` of ``sources``.

    Returns
    -------
    n, r_e, q, theta : ndarray
    """
    n = np.where(model == "SER", _numbers(sources, "sersic"), [SERSIC.get(k, 1.0) for k in model])
    e1, e2 = np.nan_to_num(_numbers(sources, "shape_e1")), np.nan_to_num(_numbers(sources, "shape_e2"))
    e = np.minimum(np.hypot(e1, e2), 0.95)
    round_ = model == "REX"
    q = np.where(round_, 1.0, (1 - e) / (1 + e))
    theta = np.where(round_, 0.0, 0.5 * np.arctan2(e2, e1))
    return n, _numbers(sources, "shape_r"), q, theta


def galaxy_stamps(psf, xp: np.ndarray, yp: np.ndarray, jacobian: np.ndarray, n: np.ndarray, r_e: np.ndarray,
                  q: np.ndarray, theta: np.ndarray, m: int) -> np.ndarray:
    """Unit-flux native-pixel stamps (k, 2m+1, 2m+1) of galaxies, centred on pixel
    (round(y), round(x)) like :meth:`~spxdask.spherex.psf.ZonedPSF.stamps`.

    Parameters
    ----------
    psf : ZonedPSF
        The file's PSF.
    xp, yp : ndarray
        0-based parent-detector pixel positions (their zone and sub-pixel phase).
    jacobian : ndarray (k, 2, 2)
        Native pixels per arcsec: rows x, y; columns East, North.
    n, r_e, q, theta : ndarray
        :func:`shape_parameters`.
    m : int
        Half-size of the stamps.

    Returns
    -------
    ndarray
    """
    k = len(xp)
    out = np.zeros((k, 2 * m + 1, 2 * m + 1))
    if not k:
        return out
    # the shape as a map from the unit circle (in half-light radii) to native pixels
    ct, st = np.cos(theta), np.sin(theta)
    rotate = np.stack([np.stack([ct, -st], -1), np.stack([st, ct], -1)], -2)
    shape = jacobian @ rotate @ (np.stack([r_e, q * r_e], -1)[:, None, :] * np.eye(2))
    reach = TRUNCATE * float(np.max(np.abs(shape).sum(axis=2)))
    # the model reaches half_width + reach from the source: its periodic copies miss the stamp
    period = psf.half_width() + reach + m + 1.5
    count = int(np.ceil(2 * MAX_FREQUENCY * period / 2)) * 2
    f = (np.arange(count) - count // 2) / period
    zones = psf.zone(xp, yp)
    used, zone_of = np.unique(zones, return_inverse=True)
    effective = psf.transform(used, f)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    offs = np.arange(-m, m + 1)
    dx, dy = np.asarray(xp) - np.round(xp), np.asarray(yp) - np.round(yp)
    for start in range(0, k, _CHUNK):
        part = slice(start, min(start + _CHUNK, k))
        # |shapeᵀ f|: the circular profile's argument, in cycles per half-light radius
        sx = shape[part, 0, 0, None, None] * fx + shape[part, 1, 0, None, None] * fy
        sy = shape[part, 0, 1, None, None] * fx + shape[part, 1, 1, None, None] * fy
        profile = np.empty(sx.shape)
        radius = np.hypot(sx, sy)
        # tables every SERSIC_STEP in n, interpolated linearly between the two around each n
        lower = np.floor(n[part] / SERSIC_STEP + 1e-9).astype(int)
        for step in np.unique(lower):
            same = lower == step
            share = (n[part][same] / SERSIC_STEP - step)[:, None, None]
            below = np.interp(radius[same], _KAPPA, _profile_transform(step), right=0.0)
            above = np.interp(radius[same], _KAPPA, _profile_transform(step + 1), right=0.0) if share.any() else 0.0
            profile[same] = (1 - share) * below + share * above
        spectrum = effective[zone_of[part]] * profile
        # the stamp's pixel centres lie at offs - (dx, dy) from the source
        wy = np.exp(2j * np.pi * (offs[None, :, None] - dy[part, None, None]) * f[None, None, :])
        wx = np.exp(2j * np.pi * (offs[None, :, None] - dx[part, None, None]) * f[None, None, :])
        out[part] = (wy @ spectrum @ wx.transpose(0, 2, 1)).real / period**2
    return out


def local_jacobian(wcs, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Native pixels per arcsec at 0-based pixels (x, y) of ``wcs``: (k, 2, 2), rows x, y,
    columns East, North (finite differences through the full, SIP, WCS).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    x, y : ndarray

    Returns
    -------
    ndarray
    """
    step = 1.0  # arcsec
    ra, dec = wcs.all_pix2world(x, y, 0)
    east = wcs.all_world2pix(ra + step / 3600 / np.cos(np.radians(dec)), dec, 0)
    north = wcs.all_world2pix(ra, dec + step / 3600, 0)
    return np.stack([np.stack([east[0] - x, north[0] - x], -1), np.stack([east[1] - y, north[1] - y], -1)], -2) / step


@functools.cache
def _profile_transform(step: int) -> np.ndarray:
    """The Fourier transform of the circular Sérsic profile of index ``step`` x
    :data:`SERSIC_STEP`, half-light radius 1, cut at :data:`TRUNCATE`, unit total, at the
    frequencies :data:`_KAPPA` (cycles per half-light radius): a Hankel transform."""
    n = step * SERSIC_STEP
    b = gammaincinv(2 * n, 0.5)
    # radii dense at the centre (a cusp for large n), out to the cut
    r = TRUNCATE * np.linspace(0, 1, 1501) ** 3
    weight = np.gradient(r) * r * np.exp(-b * (r ** (1 / n) - 1))
    weight /= weight.sum()
    return np.concatenate([j0(2 * np.pi * np.outer(part, r)) @ weight for part in np.array_split(_KAPPA, 4)])


def _numbers(sources: pd.DataFrame, name: str) -> np.ndarray:
    if name not in sources:
        return np.full(len(sources), np.nan)
    return pd.to_numeric(sources[name], errors="coerce").to_numpy(float, na_value=np.nan)
