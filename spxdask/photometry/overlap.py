"""Exact overlap areas of a circle with the pixels around its centre (compiled, no Dask).

The weights photutils' ``method="exact"`` and sep's ``subpix=0`` give each pixel of a circular
aperture. Computed here once per source, they serve the aperture sum, its variance and the PSF
fraction alike, where the libraries recompute the overlaps for each summed image
(``benchmarks/bench_photometry.py`` times the three).

The area of the circle (radius r, centre 0) inside the rectangle between the origin and a corner
(x, y), signed by the quadrant, is a function S(x, y) of the corner alone; a pixel's overlap is
S at its four corners by inclusion-exclusion. In the first quadrant, with x, y clipped to r:
S = x y when the corner is inside the circle, else xc y + P(x) - P(xc), where xc = sqrt(r² - y²)
and P(t) = ∫₀ᵗ sqrt(r² - u²) du.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _arc_integral(t, r):
    """P(t) = ∫₀ᵗ sqrt(r² - u²) du, 0 <= t <= r."""
    if t >= r:
        return 0.25 * math.pi * r * r
    return 0.5 * (t * math.sqrt(r * r - t * t) + r * r * math.asin(t / r))


@numba.njit(cache=True)
def circle_weights(dx: np.ndarray, dy: np.ndarray, r: float, m: int) -> np.ndarray:
    """Exact overlap area of each pixel of a (2m+1)² stamp with a circle of radius ``r``.

    Parameters
    ----------
    dx, dy : ndarray
        Circle centres (n,) relative to the centre of each stamp's middle pixel (m, m); pixel
        (a, b) spans [b - m - 0.5, b - m + 0.5] in x and [a - m - 0.5, a - m + 0.5] in y.
    r : float
        Radius (pixels), > 0.
    m : int
        Half-size of the stamps.

    Returns
    -------
    ndarray
        (n, 2m+1, 2m+1) areas in pixels, each between 0 and 1, summing to pi r² per source when
        the stamp holds the circle.
    """
    n, size = dx.size, 2 * m + 1
    out = np.empty((n, size, size))
    corner = np.empty((size + 1, size + 1))
    ax, sx, px = np.empty(size + 1), np.empty(size + 1), np.empty(size + 1)
    ay, sy, xc, pc = np.empty(size + 1), np.empty(size + 1), np.empty(size + 1), np.empty(size + 1)
    r2 = r * r
    for i in range(n):
        # per column and per row of corners, the terms that need a square root or an arcsine
        for b in range(size + 1):
            t = b - m - 0.5 - dx[i]
            sx[b] = 1.0 if t >= 0 else -1.0
            ax[b] = min(abs(t), r)
            px[b] = _arc_integral(ax[b], r)
        for a in range(size + 1):
            t = a - m - 0.5 - dy[i]
            sy[a] = 1.0 if t >= 0 else -1.0
            ay[a] = min(abs(t), r)
            xc[a] = math.sqrt(r2 - ay[a] * ay[a])
            pc[a] = _arc_integral(xc[a], r)
        for a in range(size + 1):
            for b in range(size + 1):
                x, y = ax[b], ay[a]
                s = x * y if x * x + y * y <= r2 else xc[a] * y + px[b] - pc[a]
                corner[a, b] = sx[b] * sy[a] * s
        for a in range(size):
            for b in range(size):
                out[i, a, b] = max(corner[a + 1, b + 1] - corner[a, b + 1] - corner[a + 1, b] + corner[a, b], 0.0)
    return out
