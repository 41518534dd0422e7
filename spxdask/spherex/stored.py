"""HDU data as stored — memory-mapped, big-endian — read from compiled (numba) loops, which
then touch only the pixels they use: :func:`as_words` hands the loops each array's bytes as
native words, :func:`f32` / :func:`i32` give back a pixel's value.
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
