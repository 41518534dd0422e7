"""Backgrounds of one L2 image: the fitted zodi scale and the local background of a source.

Both are compiled (numba) loops that read the image HDUs in place — memory-mapped and
big-endian as stored — touching only the pixels they use: rows spread over the image for the
zodi fit, each source's annulus or window for its background (called per source from
:func:`spxdask.photometry.pixels.measure_pixels`). No Dask in here. The photutils way of doing
the same (``ApertureStats`` with sigma clipping) is a baseline of ``benchmarks/bench_photometry.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from ..spherex.stored import as_words, f32, i32
from .config import PhotometryConfig


@numba.njit(cache=True)
def _zodi_sums(image, zodi, variance, flags, swaps, step, reject):
    """Over every ``step``-th row (whole rows, read in order): the number of pixels, of usable
    pixels, and the weighted sums Σ z²/var and Σ z·image/var over the usable ones."""
    ny, nx = image.shape
    n_all = n_ok = 0
    zz = zi = 0.0
    for i in range(step // 2, ny, step):
        for j in range(nx):
            n_all += 1
            if i32(flags, i, j, swaps[3]) & reject:
                continue
            v = f32(image, i, j, swaps[0])
            z = f32(zodi, i, j, swaps[1])
            var = f32(variance, i, j, swaps[2])
            if not (np.isfinite(v) and np.isfinite(z) and z != 0 and var > 0):
                continue
            n_ok += 1
            w = 1.0 / np.float64(var)
            zz += w * np.float64(z) * np.float64(z)
            zi += w * np.float64(z) * np.float64(v)
    return n_all, n_ok, zz, zi


def zodi_row_step(shape: tuple[int, int], max_pixels: int = 100_000) -> int:
    """Every how many rows :func:`fit_zodi_scale` reads one (rows ``step // 2``, ``+ step``, ...)."""
    return max(1, int(math.ceil(shape[0] * shape[1] / max_pixels)))


def fit_zodi_scale(image: np.ndarray, zodi: np.ndarray, variance: np.ndarray, flags: np.ndarray,
                   reject: int, lo: float, hi: float, min_fraction: float = 0.5,
                   max_pixels: int = 100_000) -> float:
    """Weighted least-squares amplitude s of ``zodi`` in ``image`` (w = 1/variance) over pixels
    with no ``reject`` flag bit, finite values and positive variance, clipped to [lo, hi];
    1.0 when under ``min_fraction`` of the pixels are usable or the fit is undefined.

    The zodi model is smooth, so the fit uses whole rows spread over the image (every k-th
    row, at most ``max_pixels`` pixels): few rows, each read in order, cost far less than the
    same pixels on a sparse grid. Arrays may be memory-mapped and in any byte order."""
    step = zodi_row_step(image.shape, max_pixels)
    words, swaps = as_words([image, zodi, variance, flags], "fffi")
    n_all, n_ok, zz, zi = _zodi_sums(*words, swaps, step, int(reject))  # type: ignore[call-arg]  # numba dispatcher
    if n_ok < min_fraction * n_all or not zz > 0:
        return 1.0
    scale = zi / zz
    return float(np.clip(scale, lo, hi)) if np.isfinite(scale) else 1.0


@numba.njit(cache=True)
def _clipped(buf, n, sigma, maxiters):
    """Sigma-clip ``buf[:n]`` in place (``maxiters`` rounds of: mean and population std of the
    survivors, keep |v - mean| <= sigma std); returns the survivors' median, std and count."""
    for it in range(maxiters + 1):
        mean = 0.0
        for k in range(n):
            mean += buf[k]
        mean /= n
        ss = 0.0
        for k in range(n):
            ss += (buf[k] - mean) ** 2
        std = math.sqrt(ss / n)
        if it == maxiters:
            break
        limit = sigma * std * (1 + 1e-12)
        m = 0
        for k in range(n):
            if abs(buf[k] - mean) <= limit:
                buf[m] = buf[k]
                m += 1
        if m == 0:
            return np.nan, np.nan, 0
        if m == n:
            break
        n = m
    return np.median(buf[:n]), std, n


@numba.njit(cache=True)
def source_background(i, image, zodi, flags, swaps, zodi_scale, x, y, boxes, r_in2, radii2,
                      bad_mask, source_bit, min_pixels, sigma, maxiters, values, region, is_source):
    """Background of source i: the pixels of ``boxes[i]`` (y0, y1, x0, x1, image-clipped, end
    exclusive) at squared distance d2 from (x[i], y[i]) with r_in2 <= d2 < radii2[k] form region
    k; the first of (no bad/SOURCE bit, region 0..K-1), then (no bad bit, region 0..K-1) with
    at least ``min_pixels`` pixels is clipped. ``values``, ``region``, ``is_source``: scratch
    buffers as large as a box. Returns level, error and the chosen option (-1: none)."""
    n_reg = radii2.size
    s = np.float32(zodi_scale)
    # usable pixels ring by ring (value, ring, SOURCE bit), until the strict pixels suffice
    m = strict = 0
    k_max, allow_source = -1, False
    for k in range(n_reg):
        lo2, hi2 = (r_in2 if k == 0 else radii2[k - 1]), radii2[k]
        r0, r1, c0, c1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        if np.isfinite(hi2):
            reach = math.sqrt(hi2)
            r0, r1 = max(r0, int(math.floor(y[i] - reach))), min(r1, int(math.ceil(y[i] + reach)) + 1)
            c0, c1 = max(c0, int(math.floor(x[i] - reach))), min(c1, int(math.ceil(x[i] + reach)) + 1)
        for r in range(r0, r1):
            for c in range(c0, c1):
                d2 = (r - y[i]) ** 2 + (c - x[i]) ** 2
                if d2 < lo2 or d2 >= hi2:
                    continue
                f = i32(flags, r, c, swaps[2])
                if f & bad_mask:
                    continue
                v = f32(image, r, c, swaps[0]) - s * f32(zodi, r, c, swaps[1])
                if not np.isfinite(v):
                    continue
                values[m], region[m], is_source[m] = v, k, f & source_bit
                strict += not is_source[m]
                m += 1
        if strict >= min_pixels:
            k_max = k
            break
    # then SOURCE pixels admitted, the region growing again
    for k in range(n_reg if k_max < 0 else 0):
        if (region[:m] <= k).sum() >= min_pixels:
            k_max, allow_source = k, True
            break
    if k_max < 0:
        return np.nan, np.nan, -1
    used = 0
    for j in range(m):
        if region[j] <= k_max and (allow_source or not is_source[j]):
            values[used] = values[j]
            used += 1
    med, std, _ = _clipped(values, used, sigma, maxiters)
    # standard error of a median: sqrt(pi/2) x that of a mean
    return med, math.sqrt(math.pi / 2) * std / math.sqrt(used), k_max + n_reg * allow_source


@dataclass(frozen=True)
class BackgroundRegions:
    """Where the background of each source is measured (see :func:`background_regions`)."""

    boxes: np.ndarray  # (n, 4) y0, y1, x0, x1, clipped to the image, end exclusive
    r_in2: float
    radii2: np.ndarray  # growing outer radii squared; inf for the window

    def buffer_size(self) -> int:
        """Pixels in the largest box."""
        b = self.boxes
        return int((b[:, 1] - b[:, 0]).max(initial=0) * (b[:, 3] - b[:, 2]).max(initial=0)) + 1


def background_regions(x: np.ndarray, y: np.ndarray, r: float, shape: tuple[int, int],
                       config: PhotometryConfig) -> BackgroundRegions:
    """The background regions at 0-based positions (x, y) for an aperture of radius ``r``, by
    ``config.background_method``.

    "annulus": pixels with r + ``annulus_inner_offset`` <= distance < r_out, r_out growing by
    ``annulus_expansion_step`` (up to ``max_annulus_attempts`` times, capped at
    ``max_outer_radius``) from the radius enclosing ``min_annulus_area`` until
    ``min_usable_pixels`` remain. "window": the ``window_shape`` box around the source, beyond
    r + 0.707 px. Pixels with a ``config.bad_mask`` bit or non-finite values never count;
    SOURCE pixels only when too few others remain. Values are sigma-clipped
    (``bg_sigma_clip_sigma``, ``bg_sigma_clip_maxiters``); the level is the median of the
    survivors, the error sqrt(pi/2) std / sqrt(n).
    """
    ny, nx = shape
    ix, iy = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    if config.background_method == "window":
        h, w = config.window_shape
        r_in2 = np.nextafter((r + 0.707) ** 2, np.inf)  # strictly beyond r + 0.707
        radii2 = np.array([np.inf])
        bounds = [np.floor(y - h / 2), np.ceil(y + h / 2), np.floor(x - w / 2), np.ceil(x + w / 2)]
    else:
        r_in = r + config.annulus_inner_offset
        r_out0 = max(math.sqrt(r_in**2 + config.min_annulus_area / math.pi), r_in + 0.5)
        cap = max(config.max_outer_radius, r_out0)
        radii = sorted({min(r_out0 + k * config.annulus_expansion_step, cap)
                        for k in range(config.max_annulus_attempts + 1)})
        r_in2, radii2 = r_in**2, np.array(radii) ** 2
        half = math.ceil(radii[-1])
        bounds = [iy - half, iy + half + 1, ix - half, ix + half + 1]
    boxes = np.column_stack([np.clip(b, 0, lim) for b, lim in zip(bounds, (ny, ny, nx, nx))]).astype(np.int64)
    return BackgroundRegions(boxes.reshape(-1, 4), float(r_in2), radii2)
