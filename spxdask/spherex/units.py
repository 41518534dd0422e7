"""Flux units used across spxdask: SPHEREx images are in MJy/sr, photometry in microjansky."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.wcs import WCS

#: 1 MJy/sr in microjansky per square arcsecond (= 23.5044...).
UJY_ARCSEC2_PER_MJY_SR: float = float((1 * u.MJy / u.sr).to(u.uJy / u.arcsec**2).value)

#: AB magnitude zero point for fluxes in microjansky: m = 23.9 - 2.5 log10(f / uJy).
AB_ZEROPOINT_UJY: float = float(-2.5 * np.log10((1 * u.uJy).to(u.Jy).value / 3631.0))


def ab_magnitude(flux_ujy: np.ndarray, flux_error_ujy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and its error; NaN where the flux is not positive."""
    flux = np.asarray(flux_ujy, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = flux > 0
        mag = np.where(good, AB_ZEROPOINT_UJY - 2.5 * np.log10(np.where(good, flux, 1.0)), np.nan)
        err = np.where(good, 2.5 / np.log(10) * np.asarray(flux_error_ujy, float) / flux, np.nan)
    return mag, err


def pixel_area_arcsec2(wcs: WCS, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Solid angle (arcsec^2) of the pixels centred at 0-based (x, y), through the full
    (SIP) WCS: the cross product of the pixel's edge-to-edge vectors on the unit sphere."""
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    px = np.concatenate([x + 0.5, x - 0.5, x, x])
    py = np.concatenate([y, y, y + 0.5, y - 0.5])
    ra, dec = np.radians(wcs.all_pix2world(px, py, 0))
    vec = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)
    n = x.size
    dx = vec[:n] - vec[n:2 * n]
    dy = vec[2 * n:3 * n] - vec[3 * n:]
    return np.linalg.norm(np.cross(dx, dy), axis=-1) * (180 / np.pi * 3600) ** 2
