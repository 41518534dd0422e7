"""PSF models of SPHEREx L2 files, as native-pixel stamps at a source's sub-pixel position.

QR2 files carry an optical PSF (pixel response deconvolved), 10x oversampled, one plane per
zone of an 11x11 grid; it must be integrated over native pixels. QR3 files carry effective
PSFs (pixel response included), 5x oversampled, one per zone of a 21x21 lattice; a native pixel
value is the ePSF sampled at the pixel centre. Both give, for sources at (x, y), stamps of
native pixel values normalised to unit total flux. No Dask in here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _box_weights(offset: np.ndarray, m: int, n_sub: int, centre: float, oversamp: int) -> np.ndarray:
    """Fraction of each sub-pixel (0..n_sub-1, centred at ``centre``) falling in each native
    pixel -m..m, for a source at sub-pixel ``offset`` = x - round(x). Shape (n, 2m+1, n_sub)."""
    sub_lo = (np.arange(n_sub) - centre - 0.5) / oversamp  # sub-pixel edges, px from the source
    sub_hi = sub_lo + 1.0 / oversamp
    pix_lo = np.arange(-m, m + 1) - 0.5  # native pixel edges, px from the central pixel
    lo = np.maximum(sub_lo[None, None, :], (pix_lo[None, :, None] - offset[:, None, None]))
    hi = np.minimum(sub_hi[None, None, :], (pix_lo[None, :, None] + 1 - offset[:, None, None]))
    return np.clip(hi - lo, 0.0, None) * oversamp


@dataclass(frozen=True)
class ZonedPSF:
    """PSFs per detector zone: ``data`` (n_zone, ny, nx) sampled ``oversamp`` times per native
    pixel, zone centres ``xctr``, ``yctr`` in 0-based parent-detector pixels."""

    data: np.ndarray
    xctr: np.ndarray
    yctr: np.ndarray
    oversamp: int

    def zone(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the zone nearest to each position."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        return np.argmin((x[:, None] - self.xctr[None, :]) ** 2 + (y[:, None] - self.yctr[None, :]) ** 2, axis=1)


@dataclass(frozen=True)
class OversampledPSF(ZonedPSF):
    """QR2 PSF cube: oversampled optical PSFs (pixel response deconvolved), each summing to one."""

    def stamps(self, x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
        """Native-pixel stamps (n, 2m+1, 2m+1) centred on pixel (round(y), round(x)), each
        the PSF integrated over native pixels for a source at (x, y), divided by the plane's
        total."""
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        n_zone, ny, nx = self.data.shape
        cy, cx = (ny - 1) / 2, (nx - 1) / 2
        # only sub-pixels that can land within m + 1 native pixels matter
        half = (m + 1) * self.oversamp
        ys = slice(max(0, int(cy) - half), min(ny, int(cy) + half + 1))
        xs = slice(max(0, int(cx) - half), min(nx, int(cx) + half + 1))
        out = np.zeros((x.size, 2 * m + 1, 2 * m + 1))
        zones = self.zone(x, y)
        for z in np.unique(zones):
            sel = np.flatnonzero(zones == z)
            plane = self.data[z].astype(float)
            crop = plane[ys, xs]
            wy = _box_weights(y[sel] - np.round(y[sel]), m, crop.shape[0], cy - ys.start, self.oversamp)
            wx = _box_weights(x[sel] - np.round(x[sel]), m, crop.shape[1], cx - xs.start, self.oversamp)
            out[sel] = (wy @ crop) @ wx.transpose(0, 2, 1) / plane.sum()
        return out


@dataclass(frozen=True)
class EffectivePSF(ZonedPSF):
    """QR3 ePSF table: effective PSFs (pixel response included) sampled every 1/oversamp px."""

    def stamps(self, x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
        """Native-pixel stamps (n, 2m+1, 2m+1): the ePSF interpolated (bilinear) at each pixel
        centre's offset from the source, divided by the ePSF's native-pixel total."""
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        _, ny, nx = self.data.shape
        cy, cx = (ny - 1) / 2, (nx - 1) / 2
        zones = self.zone(x, y)
        offs = np.arange(-m, m + 1)
        # sample coordinates (n, 2m+1) along each axis, in ePSF sample units
        sy = cy + (offs[None, :] - (y - np.round(y))[:, None]) * self.oversamp
        sx = cx + (offs[None, :] - (x - np.round(x))[:, None]) * self.oversamp
        y0 = np.clip(np.floor(sy).astype(int), 0, ny - 2)
        x0 = np.clip(np.floor(sx).astype(int), 0, nx - 2)
        ty = np.clip(sy - y0, 0, 1)[:, :, None]
        tx = np.clip(sx - x0, 0, 1)[:, None, :]
        z = zones[:, None, None]
        Y0, X0 = y0[:, :, None], x0[:, None, :]
        e = self.data
        val = ((1 - ty) * (1 - tx) * e[z, Y0, X0] + (1 - ty) * tx * e[z, Y0, X0 + 1]
               + ty * (1 - tx) * e[z, Y0 + 1, X0] + ty * tx * e[z, Y0 + 1, X0 + 1])
        inside = ((sy >= 0) & (sy <= ny - 1))[:, :, None] & ((sx >= 0) & (sx <= nx - 1))[:, None, :]
        totals = e.sum(axis=(1, 2)) / self.oversamp**2
        return np.where(inside, val, 0.0) / totals[zones][:, None, None]
