"""PSF models of SPHEREx L2 files, as native-pixel stamps at a source's sub-pixel position.

QR2 files carry an optical PSF (pixel response deconvolved), 10x oversampled, one plane per
zone of an 11x11 grid; it must be integrated over native pixels. QR3 files carry effective
PSFs (pixel response included), 5x oversampled, one per zone of a 21x21 lattice; a native pixel
value is the ePSF sampled at the pixel centre. Both give, for sources at (x, y), stamps of
native pixel values normalised to unit total flux. No Dask in here.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from .stored import as_words, f32


@numba.njit(cache=True)
def _nearest(xc, yc, x, y):
    """Index of the point (xc, yc) nearest to each (x, y) (the first one on ties)."""
    out = np.empty(x.size, np.int64)
    for s in range(x.size):
        best = np.inf
        for k in range(xc.size):
            d2 = (x[s] - xc[k]) ** 2 + (y[s] - yc[k]) ** 2
            if d2 < best:
                best, out[s] = d2, k
    return out


@numba.njit(cache=True)
def _cubic_taps(v, n, index, weight):
    """Nodes (clamped to 0..n) and Keys cubic-convolution weights (a = -0.5) interpolating a
    table of nodes 0..n at ``v``: exact for quadratics, error O(h^3) for smooth tables."""
    j = min(max(int(np.floor(v)), 0), n - 1)
    t = v - j
    weight[0] = (-t * t * t + 2 * t * t - t) / 2
    weight[1] = (3 * t * t * t - 5 * t * t + 2) / 2
    weight[2] = (-3 * t * t * t + 4 * t * t + t) / 2
    weight[3] = (t * t * t - t * t) / 2
    for k in range(4):
        index[k] = min(max(j - 1 + k, 0), n)


@numba.njit(cache=True)
def _bicubic(plane, rows, wr, cols, wc):
    """Sum over the 4 x 4 taps ``plane[rows[p], cols[q]] * wr[p] * wc[q]``."""
    acc = 0.0
    for p in range(4):
        part = 0.0
        for q in range(4):
            part += wc[q] * plane[rows[p], cols[q]]
        acc += wr[p] * part
    return acc


@numba.njit(cache=True)
def _sample_bicubic(data, zones, sy, sx):
    """Planes ``data[zones[i]]`` sampled at rows ``sy[i]`` x columns ``sx[i]`` (sample units)
    by bicubic convolution; 0 beyond the sampled area. Returns (n, len(sy[i]), len(sx[i]))."""
    n, ka, kb = sy.shape[0], sy.shape[1], sx.shape[1]
    ny, nx = data.shape[1] - 1, data.shape[2] - 1
    out = np.zeros((n, ka, kb))
    rows = np.empty((ka, 4), np.int64)
    cols = np.empty((kb, 4), np.int64)
    wr = np.empty((ka, 4))
    wc = np.empty((kb, 4))
    for s in range(n):
        z = zones[s]
        for a in range(ka):
            _cubic_taps(sy[s, a], ny, rows[a], wr[a])
        for b in range(kb):
            _cubic_taps(sx[s, b], nx, cols[b], wc[b])
        for a in range(ka):
            if sy[s, a] < 0 or sy[s, a] > ny:
                continue
            for b in range(kb):
                if sx[s, b] < 0 or sx[s, b] > nx:
                    continue
                out[s, a, b] = _bicubic(data[z], rows[a], wr[a], cols[b], wc[b])
    return out


@numba.njit(cache=True, fastmath=True)
def _integrate_pixels(words, swap, n_zone, crop, zones, v0, u0, n_pix, step):
    """Integrals over native pixels of PSF planes of sub-pixel values, each divided by its
    plane's total. ``words``: the (n_zone x ny, nx) planes as stored (:mod:`.stored`); ``crop``
    = (y0, y1, x0, x1), the sub-pixels that matter. Pixel (a, b) of source i spans sub-pixel
    edge coordinates [v0[i] + a step, + step) in rows and [u0[i] + b step, + step) in columns
    of the crop (sub-pixel k spans [k, k + 1]; beyond the crop is zero). The cumulative
    integral, known exactly at sub-pixel corners, is interpolated between them by bicubic
    convolution: a bilinear cumulative (a PSF flat within each sub-pixel) biases the aperture
    fraction of SPHEREx's undersampled core (sigma ~ 0.35 px) by 0.1-0.2 %. Returns
    (n, n_pix, n_pix)."""
    ny, nx = words.shape[0] // n_zone, words.shape[1]
    y0, y1, x0, x1 = crop
    cy, cx = y1 - y0, x1 - x0
    table = np.zeros((n_zone, cy + 1, cx + 1))
    totals = np.zeros(n_zone)
    for z in range(n_zone):
        for j in range(ny):
            for i in range(nx):
                totals[z] += f32(words, z * ny + j, i, swap)
        for j in range(cy):
            row = 0.0
            for i in range(cx):
                row += f32(words, z * ny + y0 + j, x0 + i, swap)
                table[z, j + 1, i + 1] = table[z, j, i + 1] + row
    out = np.empty((zones.size, n_pix, n_pix))
    corners = np.empty((n_pix + 1, n_pix + 1))
    rows = np.empty((n_pix + 1, 4), np.int64)
    cols = np.empty((n_pix + 1, 4), np.int64)
    wr = np.empty((n_pix + 1, 4))
    wc = np.empty((n_pix + 1, 4))
    for s in range(zones.size):
        z = zones[s]
        for a in range(n_pix + 1):
            _cubic_taps(min(max(v0[s] + a * step, 0.0), cy), cy, rows[a], wr[a])
            _cubic_taps(min(max(u0[s] + a * step, 0.0), cx), cx, cols[a], wc[a])
        for a in range(n_pix + 1):
            for b in range(n_pix + 1):
                corners[a, b] = _bicubic(table[z], rows[a], wr[a], cols[b], wc[b])
        for a in range(n_pix):
            for b in range(n_pix):
                out[s, a, b] = (corners[a + 1, b + 1] - corners[a, b + 1] - corners[a + 1, b]
                                + corners[a, b]) / totals[z]
    return out


#: The effective PSFs' transforms of the zones (:meth:`ZonedPSF.transform`), oldest first.
_TRANSFORMS: OrderedDict = OrderedDict()
_TRANSFORMS_KEPT = 2000


@dataclass(frozen=True)
class ZonedPSF:
    """PSFs per detector zone: ``data`` (n_zone, ny, nx) sampled ``oversamp`` times per native
    pixel (possibly as stored: memory-mapped, big-endian), zone centres ``xctr``, ``yctr`` in
    0-based parent-detector pixels."""

    data: np.ndarray
    xctr: np.ndarray
    yctr: np.ndarray
    oversamp: int

    def zone(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the zone nearest to each position."""
        return _nearest(self.xctr, self.yctr, np.asarray(x, float).ravel(), np.asarray(y, float).ravel())


    def half_width(self) -> float:
        """How far from the source (native px) the planes reach."""
        return (max(self.data.shape[1:]) - 1) / 2 / self.oversamp + 0.5

    @cached_property
    def digest(self) -> str:
        """A digest of the planes and zones: the same PSF in another file has the same one."""
        # every 4th sample of every 4th row: two calibrations differ throughout, and a tenth of
        # the planes' bytes hashes in a tenth of the time
        h = hashlib.blake2b(np.ascontiguousarray(self.data[:, ::4, ::4]).tobytes(), digest_size=16)
        h.update(str(self.data.shape).encode())
        h.update(np.concatenate([self.xctr, self.yctr]).tobytes())
        return f"{type(self).__name__}-{self.oversamp}-{h.hexdigest()}"

    def transform(self, zones: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
        """The Fourier transform of the effective PSF (the PSF integrated over a native pixel,
        unit total) of each zone in ``zones``, on the grid ``fy`` x ``fx`` (cycles per native
        pixel): (len(zones), len(fy), len(fx)), complex. Each zone's is kept (a bounded cache
        per process): every file of a detector carries the same PSF."""
        grid = (fy.size, float(fy[0]), float(fy[-1]), fx.size, float(fx[0]), float(fx[-1]))
        missing = [z for z in map(int, zones) if (self.digest, z, grid) not in _TRANSFORMS]
        if missing:
            for z, plane in zip(missing, self._transform(np.array(missing), fy, fx)):
                _TRANSFORMS[(self.digest, z, grid)] = plane
            while len(_TRANSFORMS) > _TRANSFORMS_KEPT:
                _TRANSFORMS.popitem(last=False)
        return np.stack([_TRANSFORMS[(self.digest, int(z), grid)] for z in zones])

    def _transform(self, zones: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
        _, ny, nx = self.data.shape
        uy = (np.arange(ny) - (ny - 1) / 2) / self.oversamp
        ux = (np.arange(nx) - (nx - 1) / 2) / self.oversamp
        ay, ax = np.exp(-2j * np.pi * np.outer(fy, uy)), np.exp(-2j * np.pi * np.outer(fx, ux))
        planes = np.asarray(self.data[zones], dtype=float)
        out = ay @ (planes / planes.sum(axis=(1, 2), keepdims=True)) @ ax.T
        return out * self._sample_response(fy)[:, None] * self._sample_response(fx)[None, :]

    def _sample_response(self, f: np.ndarray) -> np.ndarray:
        """What turns the samples' transform into the effective PSF's, along one axis."""
        raise NotImplementedError


@dataclass(frozen=True)
class OversampledPSF(ZonedPSF):
    """QR2 PSF cube: oversampled optical PSFs (pixel response deconvolved), each summing to one."""

    def _sample_response(self, f: np.ndarray) -> np.ndarray:
        """The cube's values are integrals over sub-pixels (their transform carries the
        sub-pixel box: divided out) of the optical PSF; a native pixel integrates it (its box)."""
        return np.sinc(f) / np.sinc(f / self.oversamp)

    def stamps(self, x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
        """Native-pixel stamps (n, 2m+1, 2m+1) centred on pixel (round(y), round(x)), each
        the PSF integrated over native pixels for a source at (x, y), divided by the plane's
        total."""
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        _, ny, nx = self.data.shape
        cy, cx = (ny - 1) / 2, (nx - 1) / 2
        # only sub-pixels that can land within m + 1 native pixels matter
        half = (m + 1) * self.oversamp
        ys = slice(max(0, int(cy) - half), min(ny, int(cy) + half + 1))
        xs = slice(max(0, int(cx) - half), min(nx, int(cx) + half + 1))
        # first native pixel edge (-m - 0.5 px from the central pixel), in sub-pixel edge
        # coordinates of the crop
        v0 = (-m - 0.5 - (y - np.round(y))) * self.oversamp + cy - ys.start + 0.5
        u0 = (-m - 0.5 - (x - np.round(x))) * self.oversamp + cx - xs.start + 0.5
        (words,), (swap,) = as_words([self.data.reshape(-1, nx)], "f")
        return _integrate_pixels(words, swap, self.data.shape[0], (ys.start, ys.stop, xs.start, xs.stop),
                                 self.zone(x, y), v0, u0, 2 * m + 1, float(self.oversamp))


@dataclass(frozen=True)
class EffectivePSF(ZonedPSF):
    """QR3 ePSF table: effective PSFs (pixel response included) sampled every 1/oversamp px."""

    def _sample_response(self, f: np.ndarray) -> np.ndarray:
        """The ePSF's samples are point values of the effective PSF: nothing to add."""
        return np.ones_like(f)

    def stamps(self, x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
        """Native-pixel stamps (n, 2m+1, 2m+1): the ePSF interpolated at each pixel centre's
        offset from the source, divided by the ePSF's native-pixel total. Interpolation is
        bicubic convolution: bilinear interpolation between 0.2 px samples of SPHEREx's
        undersampled core biased ``flux_total`` by +0.5 %."""
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        _, ny, nx = self.data.shape
        cy, cx = (ny - 1) / 2, (nx - 1) / 2
        zones = self.zone(x, y)
        offs = np.arange(-m, m + 1)
        # sample coordinates (n, 2m+1) along each axis, in ePSF sample units
        sy = cy + (offs[None, :] - (y - np.round(y))[:, None]) * self.oversamp
        sx = cx + (offs[None, :] - (x - np.round(x))[:, None]) * self.oversamp
        e = np.ascontiguousarray(self.data, dtype=float)
        totals = e.sum(axis=(1, 2)) / self.oversamp**2
        return _sample_bicubic(e, zones, sy, sx) / totals[zones][:, None, None]


#: The PSF model of a file (or of an ePSF calibration file).
FilePSF = OversampledPSF | EffectivePSF


def epsf_table(hdu) -> EffectivePSF:
    """The ePSF of an ``EPSF`` binary table (a QR3 file's HDU, or an ePSF calibration file's):
    one row per zone, columns ``XCENTER``, ``YCENTER`` (1-based parent pixels) and ``EPSF``
    (n² samples, x fast), ``OVSMPX`` samples per native pixel in its header.

    Parameters
    ----------
    hdu : astropy.io.fits.BinTableHDU

    Returns
    -------
    EffectivePSF
    """
    table = hdu.data
    n = int(np.sqrt(np.asarray(table["EPSF"][0]).size))
    return EffectivePSF(data=np.asarray(table["EPSF"], float).reshape(len(table), n, n),
                        xctr=np.asarray(table["XCENTER"], float) - 1, yctr=np.asarray(table["YCENTER"], float) - 1,
                        oversamp=int(hdu.header.get("OVSMPX", 5)))
