"""Models of extended sources: Tractor's galaxy profiles through the file's PSF (no Dask).

A catalog in the Legacy Surveys' Tractor convention says what each source looks like: ``type``
PSF (a point), REX (round exponential), EXP (exponential), DEV (de Vaucouleurs, Sérsic n = 4)
or SER (Sérsic, index ``sersic``); ``shape_r`` the half-light radius (arcsec) along the major
axis; ``shape_e1``, ``shape_e2`` the ellipticity: ``|e| = hypot(e1, e2)``, axis ratio
``b/a = (1 - |e|) / (1 + |e|)``, major axis at θ = ½ atan2(e2, e1) from East towards North. Profiles
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

import numba
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
#: Frequencies (cycles per native pixel) beyond this are left out: the point stamps of the
#: sharpest effective PSF (D1) move by < 5·10⁻⁴ of their peak.
MAX_FREQUENCY = 1.6
#: Sérsic profiles are tabulated every SERSIC_STEP in n (linear between them: < 1e-3 of the total).
SERSIC_STEP = 0.2
#: How far (px) the effective PSF reaches for the periodic copies of a model: SPHEREx's holds
#: < 10⁻⁴ of its light beyond (what a copy adds to a stamp).
PSF_REACH = 4.0
#: Galaxies are modelled in classes of their reach (px), each on the frequency grid of its
#: upper bound (the same for every image: the PSF's transforms are reused).
REACH_CLASSES = np.array([1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0, 32.0])
#: The profiles' transforms are tabulated every _KAPPA_STEP cycles per half-light radius.
_KAPPA_STEP, _KAPPA_COUNT = 0.02, 1501


def models(sources: pd.DataFrame, *, types: np.ndarray | None = None) -> np.ndarray:
    """Each source's model: its Tractor ``type`` when it is a galaxy with a usable shape, else
    ``"PSF"`` (also for every source of a catalog without a ``type`` column).

    Parameters
    ----------
    sources : DataFrame
    types : ndarray of str, optional
        :func:`tractor_types` of ``sources``, when the caller has them already.

    Returns
    -------
    ndarray of str
    """
    kind = tractor_types(sources) if types is None else types
    radius = _numbers(sources, "shape_r")
    sersic = _numbers(sources, "sersic")
    usable = np.isin(kind, list(SERSIC)) | ((kind == "SER") & (sersic >= 0.2) & (sersic <= 8.0))
    return np.where(usable & (radius > 0), kind, "PSF")


def tractor_types(sources: pd.DataFrame) -> np.ndarray:
    """Each source's Tractor ``type``, upper case, stripped; ``"PSF"`` where missing (and for
    every source of a catalog without the column).

    Parameters
    ----------
    sources : DataFrame

    Returns
    -------
    ndarray of str
    """
    if "type" not in sources:
        return np.full(len(sources), "PSF", dtype=object)
    return sources["type"].astype("string").str.strip().str.upper().fillna("PSF").to_numpy(object)


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
    reach = TRUNCATE * np.abs(shape).sum(axis=2).max(axis=1)
    size_class = np.searchsorted(REACH_CLASSES, reach)
    zones = psf.zone(xp, yp)
    step = np.floor(np.asarray(n) / SERSIC_STEP + 1e-9).astype(np.int64)
    share = np.asarray(n) / SERSIC_STEP - step
    tables = np.stack([_profile_transform(int(s)) for s in range(step.min(), step.max() + 2)])
    dx, dy = np.asarray(xp) - np.round(xp), np.asarray(yp) - np.round(yp)
    for c in np.unique(size_class):
        mine = np.flatnonzero(size_class == c)
        # the model reaches half_width + reach from the source: its periodic copies miss the stamp
        period = min(psf.half_width(), PSF_REACH) + float(REACH_CLASSES[min(c, REACH_CLASSES.size - 1)]) + m + 1.5
        if c == REACH_CLASSES.size:  # beyond the last class: its own period
            period = min(psf.half_width(), PSF_REACH) + float(reach[mine].max()) + m + 1.5
        count = int(np.ceil(MAX_FREQUENCY * period)) * 2
        f = (np.arange(count) - count // 2) / period
        used, zone_of = np.unique(zones[mine], return_inverse=True)
        effective = psf.transform(used, f, f[count // 2:])  # the half plane fx >= 0 (see _inverse)
        out[mine] = _inverse(effective.real.copy(), effective.imag.copy(), zone_of.astype(np.int64), tables,
                             step[mine] - step.min(), share[mine], np.ascontiguousarray(shape[mine]), dx[mine],
                             dy[mine], f, m, _KAPPA_STEP) / period**2
    return out


@numba.njit(cache=True)
def _phases(f, m, d, re, im):
    """``re + i im`` [j, a] = exp(2πi f[j] (a - m - d)), f[j] = (j - count / 2) / period."""
    count, size = f.size, re.shape[1]
    step = f[1] - f[0]
    for a in range(size):
        u = a - m - d
        first = 2 * np.pi * f[0] * u
        cr, ci = np.cos(first), np.sin(first)
        sr, si = np.cos(2 * np.pi * step * u), np.sin(2 * np.pi * step * u)
        for j in range(count):
            re[j, a], im[j, a] = cr, ci
            cr, ci = cr * sr - ci * si, cr * si + ci * sr


@numba.njit(cache=True, fastmath=True)
def _inverse(effective_re, effective_im, zone_of, tables, step, share, shape, dx, dy, f, m, kappa_step):
    """Per galaxy g: Σ over the frequency grid f x f of the zone's effective PSF transform x the
    profile's (its table row ``step[g]`` and the next, mixed by ``share[g]``, at ``|shapeᵀ f|``) x
    the phase of each stamp pixel centre's offset from the source (real part)."""
    k, count, size = zone_of.size, f.size, 2 * m + 1
    half = count // 2  # f[half] = 0
    f_max2 = f[0] * f[0]
    n_kappa = tables.shape[1]
    out = np.zeros((k, size, size))
    wyr, wyi = np.empty((count, size)), np.empty((count, size))
    wxr, wxi = np.empty((count, size)), np.empty((count, size))
    row_re, row_im = np.empty((count, size)), np.empty((count, size))
    for g in range(k):
        # phases e^{2πi f_j (a - m - d)}: two exponentials per axis, the rest by products
        _phases(f, m, dy[g], wyr, wyi)
        _phases(f, m, dx[g], wxr, wxi)
        row_re[:] = 0.0
        row_im[:] = 0.0
        s00, s01, s10, s11 = shape[g, 0, 0], shape[g, 0, 1], shape[g, 1, 0], shape[g, 1, 1]
        low, high, w = tables[step[g]], tables[step[g] + 1], share[g]
        z = zone_of[g]
        # the model is real: the terms at -f are the conjugates of those at f, so the half
        # plane fx >= 0 counted twice (fx = 0 once) gives the real part of the sum
        for iy in range(count):
            fy = f[iy]
            for ix in range(half, count):
                fx = f[ix]
                if fx * fx + fy * fy > f_max2:  # the band limit is a disc
                    continue
                u = s00 * fx + s10 * fy
                v = s01 * fx + s11 * fy
                kappa = np.sqrt(u * u + v * v) / kappa_step
                i = int(kappa)
                if i >= n_kappa - 1:
                    continue
                t = kappa - i
                p = low[i] + t * (low[i + 1] - low[i])
                if w > 0:
                    p += w * (high[i] + t * (high[i + 1] - high[i]) - p)
                if ix > half:
                    p *= 2.0
                er, ei = effective_re[z, iy, ix - half] * p, effective_im[z, iy, ix - half] * p
                for a in range(size):
                    row_re[ix, a] += er * wyr[iy, a] - ei * wyi[iy, a]
                    row_im[ix, a] += er * wyi[iy, a] + ei * wyr[iy, a]
        for a in range(size):
            for b in range(size):
                acc = 0.0
                for ix in range(half, count):
                    acc += row_re[ix, a] * wxr[ix, b] - row_im[ix, a] * wxi[ix, b]
                out[g, a, b] = acc
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
    :data:`SERSIC_STEP`, half-light radius 1, cut at :data:`TRUNCATE`, unit total, every
    ``_KAPPA_STEP`` cycles per half-light radius (a Hankel transform)."""
    n = max(step, 1) * SERSIC_STEP
    b = gammaincinv(2 * n, 0.5)
    # radii dense at the centre (a cusp for large n), out to the cut
    r = TRUNCATE * np.linspace(0, 1, 1501) ** 3
    weight = np.gradient(r) * r * np.exp(-b * (r ** (1 / n) - 1))
    weight /= weight.sum()
    kappa = np.arange(_KAPPA_COUNT) * _KAPPA_STEP
    return np.concatenate([j0(2 * np.pi * np.outer(part, r)) @ weight for part in np.array_split(kappa, 4)])


def _numbers(sources: pd.DataFrame, name: str) -> np.ndarray:
    if name not in sources:
        return np.full(len(sources), np.nan)
    return pd.to_numeric(sources[name], errors="coerce").to_numpy(float, na_value=np.nan)
