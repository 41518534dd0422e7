"""Per-image astrometry: the shift between the catalog and where an image's stars are (no Dask).

An L2 file's WCS places the catalog where the pointing solution says; when it is off by a
fraction of a pixel, every PSF model sits beside its source and fluxes come out low. Each image
measures the offset itself: the bright isolated point sources are centroided by PSF fitting
(flux, x shift, y shift and a local background, linearised about the catalog position and
iterated), and the shift is their mean weighted by the inverse variance of each centroid, with
outliers (a blend, an uncatalogued neighbour, a star that moved) clipped. The record
(:class:`Astrometry`) says how far, how well known, how much the stars scatter about it and
how many there are; the kernel applies it when it is significant and the stars agree on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

#: Sources whose centroid S/N (flux / its error) is below this are not used.
MIN_SNR = 30.0
#: Fewest stars for a shift.
MIN_STARS = 5
#: The brightest this many candidates are centroided (enough for an error of ~0.0003 px).
MAX_STARS = 200
#: A shift is applied when its χ² (two axes) exceeds this: 4σ.
SIGNIFICANT_CHI2 = 16.0
#: Larger shifts are not applied (a centroid is sought within this of its catalog pixel).
MAX_SHIFT_PX = 1.0
#: A star whose centroid is this many of its errors from the mean, or more, is clipped.
CLIP = 5.0
_STEP = 0.05  # px, finite difference of the PSF derivatives
_ITERATIONS, _CONVERGED = 4, 1e-3  # px

#: The outcomes :attr:`Astrometry.status` can take.
STATUSES = ("applied", "not significant", "measured", "too few stars", "too large", "untrusted")


@dataclass(frozen=True)
class Astrometry:
    """The shift measured in one image: where its stars are minus where the catalog and the
    header's WCS put them, along the image's pixel axes.

    Parameters
    ----------
    dx, dy : float
        The shift (arcsec) along x and y; NaN with fewer than :data:`MIN_STARS` stars.
    dx_error, dy_error : float
        Their errors (arcsec), scaled up by the stars' scatter when it exceeds their errors.
    rms : float
        Root mean square of the stars' offsets about the shift (arcsec).
    n_stars : int
        The stars used.
    status : str
        One of :data:`STATUSES`: ``applied``; ``not significant`` (below 4σ: the header is
        right); ``measured`` (significant, not applied: ``astrometry="measure"``); ``too few
        stars``; ``too large`` (beyond :data:`MAX_SHIFT_PX`); ``untrusted`` (the stars scatter
        by more than ``astrometry_max_rms``).
    """

    dx: float
    dy: float
    dx_error: float
    dy_error: float
    rms: float
    n_stars: int
    status: str

    @property
    def applied(self) -> bool:
        """Whether the sources were moved by the shift."""
        return self.status == "applied"

    def to_dict(self) -> dict:
        """The record as a plain dict (the manifest's ``astrometry_*`` fields)."""
        return asdict(self)


def measure_shift(image: np.ndarray, zodi: np.ndarray, variance: np.ndarray, flags: np.ndarray, zodi_scale: float,
                  x: np.ndarray, y: np.ndarray, stamps_at: Callable[[np.ndarray, np.ndarray, int], np.ndarray], *,
                  candidates: np.ndarray, m: int, bad_mask: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids of the bright isolated sources among ``candidates``.

    Parameters
    ----------
    image, zodi, variance, flags : ndarray
        The image HDUs (any byte order).
    zodi_scale : float
        Amplitude of ``zodi`` subtracted from ``image``.
    x, y : ndarray
        0-based pixel positions of every source known in the image (isolation is judged
        against all of them).
    stamps_at : callable
        ``stamps_at(x, y, m)``: unit-flux PSF stamps (n, 2m+1, 2m+1) centred on pixel
        (round(y), round(x)) for sources at (x, y).
    candidates : ndarray of bool
        The sources that may serve (point sources).
    m : int
        Half-size of the fitted box (px); a candidate is isolated when no other source lies
        within 2m + 1 px.
    bad_mask : int
        FLAGS bits whose pixels are left out.

    Returns
    -------
    offset : ndarray (n, 2)
        Measured minus given position (px) of each star used.
    error : ndarray (n, 2)
        Their errors (px).
    snr : ndarray (n,)
        Their flux S/N.
    """
    empty = (np.empty((0, 2)), np.empty((0, 2)), np.empty(0))
    ny, nx = image.shape
    x, y = np.asarray(x, float), np.asarray(y, float)
    ix, iy = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    inside = (ix - m >= 0) & (ix + m < nx) & (iy - m >= 0) & (iy + m < ny)
    pick = np.flatnonzero(candidates & inside)
    if pick.size < MIN_STARS or x.size < 2:
        return empty
    distance, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x[pick], y[pick]]), k=2)
    pick = pick[distance[:, 1] > 2 * m + 1]
    if pick.size < MIN_STARS:
        return empty
    offs = np.arange(-m, m + 1)
    rows, cols = iy[pick, None] + offs, ix[pick, None] + offs
    value = _native(image, rows, cols) - np.float32(zodi_scale) * _native(zodi, rows, cols)
    var = _native(variance, rows, cols)
    usable = ((_native(flags, rows, cols, np.int64) & bad_mask) == 0) & np.isfinite(value) & (var > 0)
    weight = np.where(usable, 1.0 / np.where(usable, var, 1.0), 0.0)
    value = np.where(usable, value, 0.0)
    # the brightest by their central pixel's S/N, all pixels of the box usable
    peak = value[:, m, m] * np.sqrt(weight[:, m, m])
    order = np.flatnonzero(usable.all(axis=(1, 2)))
    order = order[np.argsort(-peak[order])][:MAX_STARS]
    pick, value, weight = pick[order], value[order], weight[order]
    if pick.size < MIN_STARS:
        return empty
    px, py = x[pick].copy(), y[pick].copy()
    for _ in range(_ITERATIONS):  # until the centroids (most of them) stop moving
        params, cov = _fit(value, weight, px, py, ix[pick], iy[pick], stamps_at, m)
        flux = params[:, 0]
        good = flux > 0
        step_x = np.where(good, params[:, 1] / np.where(good, flux, 1.0), 0.0)
        step_y = np.where(good, params[:, 2] / np.where(good, flux, 1.0), 0.0)
        # a centroid stays on its box (its differences too): within MAX_SHIFT_PX + 1/2 of the
        # box's central pixel
        bound = MAX_SHIFT_PX + 0.5 - 2 * _STEP
        px = np.clip(px + step_x, ix[pick] - bound, ix[pick] + bound)
        py = np.clip(py + step_y, iy[pick] - bound, iy[pick] + bound)
        if np.median(np.abs(np.concatenate([step_x, step_y]))) < _CONVERGED:
            break
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / np.sqrt(cov[:, 0, 0])
        error = np.column_stack([np.sqrt(cov[:, 1, 1]), np.sqrt(cov[:, 2, 2])]) / np.abs(flux)[:, None]
    offset = np.column_stack([px - x[pick], py - y[pick]])
    lost = (np.abs(px - ix[pick]) >= bound) | (np.abs(py - iy[pick]) >= bound)
    ok = (snr >= MIN_SNR) & np.isfinite(error).all(axis=1) & ~lost
    return offset[ok], error[ok], snr[ok]


def combine(offset: np.ndarray, error: np.ndarray, *, scale: float, max_rms: float, apply: bool) -> Astrometry:
    """The image's shift from its stars' centroid offsets, and what to do with it.

    Parameters
    ----------
    offset, error : ndarray (n, 2)
        :func:`measure_shift`'s offsets and errors (px).
    scale : float
        Pixel scale (arcsec).
    max_rms : float
        Above this scatter of the stars about the shift (arcsec) the shift is not trusted.
    apply : bool
        Whether a significant, trusted shift is to be applied.

    Returns
    -------
    Astrometry
    """
    keep = np.ones(len(offset), bool)
    for _ in range(5):  # clip the stars far from the mean (by their errors and the stars' spread)
        if keep.sum() < MIN_STARS:
            break
        mean = _mean(offset[keep], error[keep])
        resid = offset - mean
        spread = np.sqrt(error**2 + (1.4826 * np.median(np.abs(resid[keep]), axis=0)) ** 2)
        clipped = np.all(np.abs(resid) <= CLIP * spread, axis=1)
        if np.array_equal(clipped, keep):
            break
        keep = clipped
    if keep.sum() < MIN_STARS:
        return Astrometry(np.nan, np.nan, np.nan, np.nan, np.nan, int(keep.sum()), "too few stars")
    w = 1.0 / error[keep] ** 2
    mean = _mean(offset[keep], error[keep])
    chi2 = np.sum(w * (offset[keep] - mean) ** 2, axis=0) / max(int(keep.sum()) - 1, 1)
    sigma = np.sqrt(np.maximum(chi2, 1.0) / w.sum(axis=0))
    rms = float(np.sqrt(np.mean(np.sum((offset[keep] - mean) ** 2, axis=1)))) * scale
    significant = float(np.sum((mean / sigma) ** 2)) > SIGNIFICANT_CHI2
    if rms > max_rms:
        status = "untrusted"
    elif not significant:
        status = "not significant"
    elif np.hypot(*mean) > MAX_SHIFT_PX:
        status = "too large"
    else:
        status = "applied" if apply else "measured"
    return Astrometry(float(mean[0] * scale), float(mean[1] * scale), float(sigma[0] * scale), float(sigma[1] * scale),
                      rms, int(keep.sum()), status)


def _mean(offset: np.ndarray, error: np.ndarray) -> np.ndarray:
    """The inverse-variance weighted mean offset, per axis."""
    w = 1.0 / error**2
    return (w * offset).sum(axis=0) / w.sum(axis=0)


def _native(array: np.ndarray, rows: np.ndarray, cols: np.ndarray, dtype=np.float64) -> np.ndarray:
    """``array`` at the (n, 2m+1, 2m+1) boxes of pixel ``rows`` x ``cols``, in native order."""
    return np.asarray(array[rows[:, :, None], cols[:, None, :]], dtype=dtype)


def _fit(value: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray, ix: np.ndarray, iy: np.ndarray,
         stamps_at: Callable, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares per star of value = f P + a ∂P/∂x + b ∂P/∂y + c over its box,
    P at (x, y); the parameters (f, a, b, c) and their covariance."""
    # the stamps at (x, y) and a step either side along x and y, in one call
    shift_x, shift_y = np.array([0, _STEP, -_STEP, 0, 0]), np.array([0, 0, 0, _STEP, -_STEP])
    every = _boxed(stamps_at, (x[None, :] + shift_x[:, None]).ravel(), (y[None, :] + shift_y[:, None]).ravel(),
                   np.tile(ix, 5), np.tile(iy, 5), m).reshape(5, len(x), 2 * m + 1, 2 * m + 1)
    centre = every[0]
    d_x, d_y = (every[1] - every[2]) / (2 * _STEP), (every[3] - every[4]) / (2 * _STEP)
    # f P(x + δx) ≈ f P(x) + (f δx) ∂P/∂x: a = f δx, b = f δy
    design = np.stack([centre, d_x, d_y, np.ones_like(centre)], axis=-1).reshape(len(x), -1, 4)
    w = weight.reshape(len(x), -1)
    normal = np.einsum("npi,np,npj->nij", design, w, design)
    rhs = np.einsum("npi,np,np->ni", design, w, value.reshape(len(x), -1))
    cov = np.linalg.inv(normal)
    return np.einsum("nij,nj->ni", cov, rhs), cov


def _boxed(stamps_at: Callable, x: np.ndarray, y: np.ndarray, ix: np.ndarray, iy: np.ndarray, m: int) -> np.ndarray:
    """Unit-flux stamps of sources at (x, y) on the fixed boxes centred on (iy, ix): stamps one
    pixel larger, cut where the box lies within them (|x - ix|, |y - iy| < 1.5)."""
    big = stamps_at(x, y, m + 1)
    sx, sy = ix - np.round(x).astype(np.int64), iy - np.round(y).astype(np.int64)
    size = 2 * m + 1
    a = (1 + sy)[:, None] + np.arange(size)
    b = (1 + sx)[:, None] + np.arange(size)
    return big[np.arange(len(x))[:, None, None], a[:, :, None], b[:, None, :]]
