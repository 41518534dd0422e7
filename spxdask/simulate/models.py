"""The physical models of the simulator: the wavelength map (WCS-WAVE), the two-Gaussian PSF
and its zones, point sources drawn through it, and the zodiacal light."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import erf, gammaincinv

from ..spherex import channels
from ..spherex.format import DETECTOR_CENTRE, PIXEL_SCALE_ARCSEC

#: Nominal PSF core FWHM per detector (arcsec); the PSF_FWHM keyword of real files is 5-6".
PSF_FWHM_ARCSEC = {1: 4.9, 2: 5.0, 3: 5.2, 4: 5.6, 5: 6.0, 6: 6.3}
PSF_WING_FRACTION = 0.12  # light in the broad wing component
PSF_WING_SCALE = 2.8  # wing sigma / core sigma


def wave_table(detector: int, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detector's WCS-WAVE control points (1-based parent pixels) and VALUES (ny, nx, 2).

    Wavelength falls log-linearly with row and rises along x towards the edges (the "smile",
    +1.04 % as in the real D1 table), spanning the real tables' extremes; bandwidth is
    wavelength / R from the packaged channel table. QR3 shifts D5 and D6 by +0.0064 micron.

    Parameters
    ----------
    detector : int
    layout : {"qr2", "qr3"}

    Returns
    -------
    xs, ys, values : ndarray
    """
    det = channels.detector(detector)
    xs = np.array(det.wave_x_control, float)
    ys = np.array(det.wave_y_control, float)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    t = (yy - 1) / (channels.N_PIX - 1)
    smile = 0.0104
    top_centre = det.wave_top_um / (1 + smile)  # the table maximum is at the edges of row 1
    wl = top_centre * (det.wave_bottom_um / top_centre) ** t * (1 + smile * ((xx - DETECTOR_CENTRE - 1) / DETECTOR_CENTRE) ** 2)
    if layout == "qr3" and detector in (5, 6):
        wl = wl + 0.0064
    bw = wl / channels.resolving_power(detector, wl)
    return xs, ys, np.stack([wl, bw], axis=-1).astype(np.float32)

def zone_grid(detector: int, layout: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Zone centres (0-based parent pixels, x-fast) and zone widths of the PSF model.

    Parameters
    ----------
    detector : int
    layout : {"qr2", "qr3"}

    Returns
    -------
    x, y : ndarray
        The zone centres.
    width_x, width_y : float
    """
    nzx, nzy = (11, 11) if layout == "qr2" else ((11, 41) if detector == 3 else (21, 21))
    wx, wy = channels.N_PIX / nzx, channels.N_PIX / nzy
    cx = (np.arange(nzx) + 0.5) * wx - 0.5
    cy = (np.arange(nzy) + 0.5) * wy - 0.5
    gx, gy = np.meshgrid(cx, cy)
    return gx.ravel(), gy.ravel(), wx, wy

def psf_sigma(detector: int, xp: np.ndarray, yp: np.ndarray, *, gradient: float = 0.0) -> np.ndarray:
    """Core Gaussian sigma (native pixels) at parent pixel (xp, yp), broader at the corners.

    Parameters
    ----------
    detector : int
    xp, yp : ndarray
        0-based parent-detector pixels.
    gradient : float
        Fractional change of the width per detector half-width along x.

    Returns
    -------
    ndarray
    """
    base = PSF_FWHM_ARCSEC[detector] / PIXEL_SCALE_ARCSEC / 2.3548
    u = (np.asarray(xp) - DETECTOR_CENTRE) / DETECTOR_CENTRE
    r2 = u**2 + ((np.asarray(yp) - DETECTOR_CENTRE) / DETECTOR_CENTRE) ** 2
    return base * (1 + 0.06 * r2) * (1 + gradient * u)

def _box_integral(lo: np.ndarray, hi: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Integral over [lo, hi] of a unit 1-D Gaussian of width ``sigma`` centred on 0, summed
    over the core and wing components (their weights are applied in :func:`psf_pixels`)."""
    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf(hi / s) - erf(lo / s))

def psf_pixels(dx_lo, dx_hi, dy_lo, dy_hi, sigma) -> np.ndarray:
    """Fraction of the PSF (core + wing) falling in boxes given by edges relative to the source.

    Parameters
    ----------
    dx_lo, dx_hi : ndarray
        Box edges along x (px from the source), shape (..., 1, nx).
    dy_lo, dy_hi : ndarray
        Box edges along y, shape (..., ny, 1).
    sigma : ndarray or float
        Core Gaussian sigma (px).

    Returns
    -------
    ndarray
    """
    out: Any = 0.0
    for weight, scale in ((1 - PSF_WING_FRACTION, 1.0), (PSF_WING_FRACTION, PSF_WING_SCALE)):
        out = out + weight * _box_integral(dy_lo, dy_hi, sigma * scale) * _box_integral(dx_lo, dx_hi, sigma * scale)
    return out

def render_stamps(img: np.ndarray, x: np.ndarray, y: np.ndarray, amplitude: np.ndarray,
                  sigma: np.ndarray, half: int = 8) -> None:
    """Add point sources (total ``amplitude`` in image units x pixels) at 0-based (x, y),
    each the two-component PSF integrated exactly over native pixels."""
    ny, nx = img.shape
    offs = np.arange(-half, half + 1)
    for xi, yi, amp, sg in zip(x, y, amplitude, sigma):
        cx, cy = int(np.round(xi)), int(np.round(yi))
        px, py = cx + offs, cy + offs
        stamp = psf_pixels((px - 0.5 - xi)[None, :], (px + 0.5 - xi)[None, :],
                            (py - 0.5 - yi)[:, None], (py + 0.5 - yi)[:, None], sg)
        okx = (px >= 0) & (px < nx)
        oky = (py >= 0) & (py < ny)
        img[np.ix_(py[oky], px[okx])] += amp * stamp[np.ix_(oky, okx)]

#: Galaxies are drawn on sub-pixels of 1/GALAXY_OVERSAMPLE native pixel, each profile value
#: the mean of GALAXY_SUPERSAMPLE² points in its sub-pixel.
GALAXY_OVERSAMPLE, GALAXY_SUPERSAMPLE = 8, 3
#: Galaxy profiles are cut at this many half-light radii.
GALAXY_TRUNCATE = 8.0


def sersic_profile(rho: np.ndarray, n: float) -> np.ndarray:
    """Surface brightness of a Sérsic profile of index n at elliptical radius ``rho`` (in
    half-light radii), 1 at rho = 1, 0 beyond :data:`GALAXY_TRUNCATE`."""
    b = gammaincinv(2 * n, 0.5)
    return np.where(rho <= GALAXY_TRUNCATE, np.exp(-b * (np.power(rho, 1 / n) - 1)), 0.0)


def render_galaxies(img: np.ndarray, x: np.ndarray, y: np.ndarray, amplitude: np.ndarray, sigma: np.ndarray,
                    shapes: np.ndarray, half: int = 8) -> None:
    """Add galaxies (total ``amplitude`` in image units x pixels) at 0-based (x, y): each
    profile drawn on a sub-pixel grid whose cells tile the native pixels, convolved (FFT) with
    the two-component PSF integrated over the same cells, then summed into native pixels.

    Parameters
    ----------
    img : ndarray
        The image, added to in place.
    x, y, amplitude, sigma : ndarray
        Positions, total fluxes and PSF core widths (px).
    shapes : ndarray (k, 5)
        Per galaxy: Sérsic index, and the 2 x 2 map (row-major) from the unit circle in
        half-light radii to native pixel offsets.
    half : int
        The galaxy is drawn over (2 half + 1)² native pixels around its pixel.
    """
    os_, sup = GALAXY_OVERSAMPLE, GALAXY_SUPERSAMPLE
    ny, nx = img.shape
    size = (2 * half + 1) * os_
    # sub-pixel cell centres relative to the central native pixel's centre, and the points
    # sampled within each cell
    centres = (np.arange(size) + 0.5) / os_ - (half + 0.5)
    fine = (centres[:, None] + ((np.arange(sup) + 0.5) / sup - 0.5)[None, :] / os_).ravel()
    k = np.arange(-6 * os_, 6 * os_ + 1) / os_
    for xi, yi, amp, sg, shape in zip(x, y, amplitude, sigma, shapes):
        cx, cy = int(np.round(xi)), int(np.round(yi))
        n, mapping = shape[0], np.asarray(shape[1:], float).reshape(2, 2)
        uy, ux = np.meshgrid(fine + cy - yi, fine + cx - xi, indexing="ij")
        t = np.linalg.solve(mapping, np.stack([ux.ravel(), uy.ravel()]))
        profile = sersic_profile(np.hypot(t[0], t[1]), n).reshape(size, sup, size, sup).mean(axis=(1, 3))
        profile /= profile.sum()
        kernel = psf_pixels((k - 0.5 / os_)[None, :], (k + 0.5 / os_)[None, :],
                            (k - 0.5 / os_)[:, None], (k + 0.5 / os_)[:, None], sg)
        drawn = fftconvolve(profile, kernel, mode="same").reshape(2 * half + 1, os_, 2 * half + 1, os_).sum(axis=(1, 3))
        px, py = cx + np.arange(-half, half + 1), cy + np.arange(-half, half + 1)
        okx, oky = (px >= 0) & (px < nx), (py >= 0) & (py < ny)
        img[np.ix_(py[oky], px[okx])] += amp * drawn[np.ix_(oky, okx)]


def zodi_model(wavelength_um: np.ndarray, xp: np.ndarray, yp: np.ndarray,
               gradient: tuple[float, float]) -> np.ndarray:
    """Zodiacal light (MJy/sr): falls from ~0.35 MJy/sr at 0.75 um to a minimum near 3.5 um,
    with a linear gradient over the detector."""
    lam = np.asarray(wavelength_um)
    spectrum = 0.35 * (lam / 0.75) ** -1.6 + 0.02 * (lam / 3.5) ** 3
    u = (xp - DETECTOR_CENTRE) / DETECTOR_CENTRE
    v = (yp - DETECTOR_CENTRE) / DETECTOR_CENTRE
    return spectrum * (1 + gradient[0] * u + gradient[1] * v)
