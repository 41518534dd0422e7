"""The per-pixel wavelength of an L2 image: bilinear WAVE-TAB lookup (FITS Paper III) of the
WCS-WAVE control grid, at scattered points or on a pixel grid (numpy only)."""

from __future__ import annotations

import numpy as np


def _table_index(p: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.interp(p, controls, np.arange(controls.size, dtype=float))
    i0 = np.minimum(f.astype(np.intp), controls.size - 2)
    return i0, f - i0


def wave_lookup(xs: np.ndarray, ys: np.ndarray, values: np.ndarray,
                px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear WAVE-TAB lookup (FITS Paper III) at scattered points: control points ``xs``
    (nx), ``ys`` (ny), ``values`` (ny, nx, 2); ``px``, ``py`` are 1-based table coordinates.
    Positions outside the control grid take the edge value. Returns (wavelength, bandwidth)."""
    x0, tx = _table_index(np.asarray(px, float), xs)
    y0, ty = _table_index(np.asarray(py, float), ys)
    k = y0 * xs.size + x0
    out = []
    for plane in (values[..., 0].ravel(), values[..., 1].ravel()):
        a, b, c, d = plane[k], plane[k + 1], plane[k + xs.size], plane[k + xs.size + 1]
        top = a + tx * (b - a)
        out.append(top + ty * (c + tx * (d - c) - top))
    return out[0], out[1]


def wave_map(xs: np.ndarray, ys: np.ndarray, values: np.ndarray,
             px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear WAVE-TAB lookup on the grid ``py`` (rows) x ``px`` (columns), 1-based table
    coordinates: bilinear interpolation is separable, so it is two small matrix products."""
    def weights(p, controls):
        i0, t = _table_index(np.asarray(p, float), controls)
        w = np.zeros((p.size, controls.size))
        rows = np.arange(p.size)
        w[rows, i0] = 1 - t
        w[rows, i0 + 1] += t
        return w
    wy, wx = weights(py, ys), weights(px, xs)
    return wy @ values[..., 0] @ wx.T, wy @ values[..., 1] @ wx.T
