"""The pixels of every source of one image, in one compiled (numba) pass over the stored HDUs:
per source its background (:func:`.background.source_background`), then its aperture — the
exact-overlap sums (:mod:`.overlap`) of the background-subtracted pixels and of their
variances, the flags. One pass, so the rows a source's background brought into the cache
serve its aperture too. No Dask in here.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from ..spherex.flags import Flag
from ..spherex.stored import as_words, f32, i32
from .background import background_regions, source_background
from .config import PhotometryConfig
from .overlap import circle_weights


class SourcePixels(NamedTuple):
    """What :func:`measure_pixels` measures, per source."""

    bg: np.ndarray  # background level (image units), NaN if none
    bg_error: np.ndarray
    bg_used_source: np.ndarray  # SOURCE pixels had to be admitted to the background
    flux: np.ndarray  # Σ w (image - zodi - bg) over the usable pixels, w the exact overlap
    variance: np.ndarray  # Σ w variance over the usable pixels
    weights: np.ndarray  # (n, 2m+1, 2m+1) w of the usable pixels, 0 elsewhere
    flag: np.ndarray  # OR of the flags of the pixels whose centre is in the aperture
    n_bad: np.ndarray  # unusable pixels among those


@numba.njit(cache=True)
def _aperture(i, image, zodi, variance, flags, swaps, s, ix, iy, dx, dy, r, bg, bad_mask, m,
              weights, flux, var, flag, n_bad):
    """Aperture of source i over the (2m+1)^2 pixels centred on pixel (iy[i], ix[i]), with the
    overlap ``weights[i]``, which keep only the usable pixels."""
    ny, nx = image.shape
    size = 2 * m + 1
    w = weights[i]
    for a in range(size):
        row = iy[i] + a - m
        for b in range(size):
            col = ix[i] + b - m
            if w[a, b] <= 0:
                continue
            if row < 0 or row >= ny or col < 0 or col >= nx:
                w[a, b] = 0.0
                continue
            f = i32(flags, row, col, swaps[3])
            v = f32(image, row, col, swaps[0]) - s * f32(zodi, row, col, swaps[1])
            vv = f32(variance, row, col, swaps[2])
            bad = (f & bad_mask) != 0 or not np.isfinite(v) or not np.isfinite(vv)
            if (b - m - dx[i]) ** 2 + (a - m - dy[i]) ** 2 <= r * r:
                flag[i] |= f
                n_bad[i] += bad
            if bad:
                w[a, b] = 0.0
            else:
                flux[i] += w[a, b] * (np.float64(v) - bg)
                var[i] += w[a, b] * vv


@numba.njit(cache=True)
def _measure_pixels(image, zodi, variance, flags, swaps, zodi_scale, x, y, ix, iy, r, m, boxes, r_in2, radii2,
                    buffer_size, bad_mask, source_bit, min_pixels, sigma, maxiters):
    n = x.size
    bg = np.full(n, np.nan)
    bg_error = np.full(n, np.nan)
    option = np.full(n, -1)
    dx, dy = x - ix, y - iy
    weights = circle_weights(dx, dy, r, m)
    flux = np.zeros(n)
    var = np.zeros(n)
    flag = np.zeros(n, np.int32)
    n_bad = np.zeros(n, np.int16)
    values = np.empty(buffer_size)
    region = np.empty(buffer_size, np.int64)
    is_source = np.empty(buffer_size, np.bool_)
    s = np.float32(zodi_scale)
    for i in range(n):
        bg[i], bg_error[i], option[i] = source_background(
            i, image, zodi, flags, (swaps[0], swaps[1], swaps[3]), zodi_scale, x, y, boxes, r_in2, radii2,
            bad_mask, source_bit, min_pixels, sigma, maxiters, values, region, is_source)
        _aperture(i, image, zodi, variance, flags, swaps, s, ix, iy, dx, dy, r, bg[i], bad_mask, m,
                  weights, flux, var, flag, n_bad)
    return bg, bg_error, option, flux, var, weights, flag, n_bad


def measure_pixels(image: np.ndarray, zodi: np.ndarray, variance: np.ndarray, flags: np.ndarray,
                   zodi_scale: float, x: np.ndarray, y: np.ndarray, r: float, m: int,
                   config: PhotometryConfig) -> SourcePixels:
    """Background (:func:`.background.background_regions`) and exact circular-aperture sums
    of radius ``r`` (m >= r: the (2m+1)^2 pixels around round(x), round(y) hold the aperture)
    after subtracting ``zodi_scale`` x zodi, from the image HDUs as stored (any byte order).

    A pixel is usable in the aperture if it is in the image, has no ``config.bad_mask`` bit
    and finite image and variance; the sums are over the usable pixels.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    regions = background_regions(x, y, r, image.shape, config)
    words, swaps = as_words([image, zodi, variance, flags], "fffi")
    bg, bg_error, option, *sums = _measure_pixels(  # type: ignore[call-arg]  # numba dispatcher
        *words, swaps, float(zodi_scale), x, y, np.round(x).astype(np.int64), np.round(y).astype(np.int64),
        float(r), int(m), regions.boxes, regions.r_in2, regions.radii2, regions.buffer_size(),
        int(config.bad_mask), int(Flag.SOURCE), int(config.min_usable_pixels),
        float(config.bg_sigma_clip_sigma), int(config.bg_sigma_clip_maxiters))
    return SourcePixels(bg, bg_error, option >= regions.radii2.size, *sums)
