"""Compiled (numba) access to the image HDUs as stored — memory-mapped, big-endian — so the
photometry loops read only the pixels they use, and the aperture cut-outs of all sources in one
pass. No Dask in here.
"""

from __future__ import annotations

import numba
import numpy as np


def as_words(arrays: list[np.ndarray], kinds: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The bytes of 2-D image arrays as native uint32 words, and per array whether each word
    must be byte-swapped to give the value. ``kinds`` gives per array the value type the loops
    read: "f" (float32) or "i" (int32); arrays of another type are converted first."""
    out, swaps = [], []
    for a, kind in zip(arrays, kinds, strict=True):
        if a.dtype.kind != kind or a.dtype.itemsize != 4:
            a = np.asarray(a, dtype=f"={kind}4")
        out.append(a.view(np.uint32))
        swaps.append(not a.dtype.isnative)
    return out, np.array(swaps)


@numba.njit(cache=True, inline="always")
def word(a, i, j, swap):
    """Word (i, j) of ``a``, byte-swapped if ``swap``."""
    u = a[i, j]
    if swap:
        u = ((u & 0xFF) << 24) | ((u & 0xFF00) << 8) | ((u >> 8) & 0xFF00) | (u >> 24)
    return np.uint32(u)


@numba.njit(cache=True, inline="always")
def f32(a, i, j, swap):
    """Pixel (i, j) of a float32 HDU given as words."""
    return word(a, i, j, swap).view(np.float32)


@numba.njit(cache=True, inline="always")
def i32(a, i, j, swap):
    """Pixel (i, j) of an int32 HDU given as words."""
    return word(a, i, j, swap).view(np.int32)


@numba.njit(cache=True)
def aperture_stamps(image, zodi, variance, flags, swaps, zodi_scale, ix, iy, dx, dy, r, bg, bad_mask, m):
    """Cut-outs of (2m+1)^2 pixels centred on pixels (iy, ix), stacked into one mosaic image
    (source i in rows i (2m+1) ... ): the zodi- and background-subtracted image and the
    variance where a pixel is usable (in the image, no ``bad_mask`` bit, finite), else 0; the
    usable mask; and over the pixels whose centre lies within ``r`` of (ix + dx, iy + dy): the
    OR of their flags and the number of unusable ones."""
    ny, nx = image.shape
    n, size = ix.size, 2 * m + 1
    net = np.zeros((n * size, size))
    var = np.zeros((n * size, size))
    usable = np.zeros((n, size, size), np.bool_)
    flag = np.zeros(n, np.int32)
    n_bad = np.zeros(n, np.int16)
    s = np.float32(zodi_scale)
    for i in range(n):
        for a in range(size):
            row = iy[i] + a - m
            for b in range(size):
                col = ix[i] + b - m
                if row < 0 or row >= ny or col < 0 or col >= nx:
                    continue
                f = i32(flags, row, col, swaps[3])
                v = f32(image, row, col, swaps[0]) - s * f32(zodi, row, col, swaps[1])
                vv = f32(variance, row, col, swaps[2])
                bad = (f & bad_mask) != 0 or not np.isfinite(v) or not np.isfinite(vv)
                if (b - m - dx[i]) ** 2 + (a - m - dy[i]) ** 2 <= r * r:
                    flag[i] |= f
                    n_bad[i] += bad
                if not bad:
                    net[i * size + a, b] = np.float64(v) - bg[i]
                    var[i * size + a, b] = vv
                    usable[i, a, b] = True
    return net, var, usable, flag, n_bad
