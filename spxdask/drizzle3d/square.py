"""The compiled hot loop of the drizzle: per input pixel, the exact overlap of its shrunk
footprint with each output pixel (the square kernel), times its spectral overlaps, accumulated
straight into a partial cube — no per-contribution temporaries. A first pass finds the box each
plane's contributions reach (:func:`plane_boxes`), so a partial holds per plane only those.

It computes the same overlaps as :func:`spxdask.drizzle3d.spatial.square_overlaps` (numpy, used
for the pair-listing API) — a test holds them equal — and is benchmarked against the reference
algorithm in ``benchmarks/bench_drizzle.py``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _g(u: float) -> float:  # antiderivative of clamp(u, 0, 1)
    if u <= 0.0:
        return 0.0
    if u >= 1.0:
        return u - 0.5
    return 0.5 * u * u


@numba.njit(cache=True, inline="always")
def _edge(x1: float, y1: float, x2: float, y2: float) -> float:
    """Signed ∫ clamp(y(x), 0, 1) dx of segment (x1,y1)→(x2,y2) over x in [0, 1]."""
    dx = x2 - x1
    if abs(dx) <= 1e-12:
        return 0.0
    a = min(max(min(x1, x2), 0.0), 1.0)
    b = min(max(max(x1, x2), 0.0), 1.0)
    if b <= a:
        return 0.0
    m = (y2 - y1) / dx
    c = y1 - m * x1
    if abs(m) > 1e-12:
        integral = (_g(m * b + c) - _g(m * a + c)) / m
    else:
        integral = min(max(c, 0.0), 1.0) * (b - a)
    return integral if dx > 0 else -integral


@numba.njit(cache=True, inline="always")
def _cell_overlap(qx, qy, ox: float, oy: float) -> float:
    """Area of the quadrilateral (qx, qy) inside the unit cell [ox, ox+1] x [oy, oy+1]."""
    total = 0.0
    for i in range(4):
        j = (i + 1) % 4
        total += _edge(qx[i] - ox, qy[i] - oy, qx[j] - ox, qy[j] - oy)
    return abs(total)


@numba.njit(cache=True, inline="always")
def _footprint(kx, ky, cx, cy, iy: int, ix: int, shrink: float, qx, qy) -> float:
    """Fill (qx, qy) with the shrunk footprint of window pixel (iy, ix) in output pixel
    coordinates (+0.5: output pixel k covers [k, k+1]); its area."""
    ccx, ccy = cx[iy, ix], cy[iy, ix]
    qx[0] = kx[iy, ix]
    qx[1] = kx[iy, ix + 1]
    qx[2] = kx[iy + 1, ix + 1]
    qx[3] = kx[iy + 1, ix]
    qy[0] = ky[iy, ix]
    qy[1] = ky[iy, ix + 1]
    qy[2] = ky[iy + 1, ix + 1]
    qy[3] = ky[iy + 1, ix]
    area = 0.0
    for i in range(4):  # shrink about the centre
        qx[i] = ccx + shrink * (qx[i] - ccx) + 0.5
        qy[i] = ccy + shrink * (qy[i] - ccy) + 0.5
    for i in range(4):
        j = (i + 1) % 4
        area += qx[i] * qy[j] - qx[j] * qy[i]
    return abs(area) * 0.5


@numba.njit(cache=True)
def plane_boxes(kx, ky, cx, cy, shrink, good, z_idx, f_z, grid_ny, grid_nx, n_z):
    """(n_z, 4) int64: per plane of the cube, the rows [y0, y1) and columns [x0, x1) the
    window's good pixels can reach in it (empty, y0 >= y1, where none does). Arguments as
    :func:`accumulate_square`."""
    out = np.empty((n_z, 4), np.int64)
    out[:, 0] = grid_ny
    out[:, 1] = 0
    out[:, 2] = grid_nx
    out[:, 3] = 0
    hy, hx = cx.shape
    qx = np.empty(4)
    qy = np.empty(4)
    for iy in range(hy):
        for ix in range(hx):
            p = iy * hx + ix
            if not good[p] or _footprint(kx, ky, cx, cy, iy, ix, shrink, qx, qy) <= 0.0:
                continue
            oy0 = max(int(np.floor(min(min(qy[0], qy[1]), min(qy[2], qy[3])))), 0)
            oy1 = min(int(np.ceil(max(max(qy[0], qy[1]), max(qy[2], qy[3])))), grid_ny)
            ox0 = max(int(np.floor(min(min(qx[0], qx[1]), min(qx[2], qx[3])))), 0)
            ox1 = min(int(np.ceil(max(max(qx[0], qx[1]), max(qx[2], qx[3])))), grid_nx)
            if oy0 >= oy1 or ox0 >= ox1:
                continue
            for kk in range(z_idx.shape[1]):
                if f_z[p, kk] <= 0.0:
                    continue
                z = z_idx[p, kk]
                out[z, 0] = min(out[z, 0], oy0)
                out[z, 1] = max(out[z, 1], oy1)
                out[z, 2] = min(out[z, 2], ox0)
                out[z, 3] = max(out[z, 3], ox1)
    return out


@numba.njit(cache=True, fastmath=True)
def accumulate_square(kx, ky, cx, cy, shrink, good, weight, data, var, flags, z_idx, f_z, min_overlap,
                      grid_ny, grid_nx, z0, boxes, starts, flux, wsum, vsum, and_mask, or_mask, offsets, cov):
    """Drizzle every good input pixel of a window into the partial-cube buffers: flat, plane
    z0 + i's box (rows boxes[i, 0]:boxes[i, 1], columns boxes[i, 2]:boxes[i, 3], row-major)
    from ``starts[i]`` on; the boxes must hold every voxel reached (:func:`plane_boxes`).

    ``kx, ky``: output pixel coordinates of the window's pixel corners, (hy + 1, hx + 1);
    ``cx, cy``: of its pixel centres, (hy, hx); ``good``, ``weight``, ``data``, ``var``,
    ``flags``: per window pixel (flat); ``z_idx``, ``f_z``: (n_pix, k) spectral bins and
    fractions. ``cov`` (len(offsets), n_voxels) accumulates Σ w_o w_o' σ² of the pairs of
    voxels (o, o + offset) of one plane that share an input pixel. Returns the number of voxel
    contributions.
    """
    hy, hx = cx.shape
    k = z_idx.shape[1]
    qx = np.empty(4)
    qy = np.empty(4)
    cell_y = np.empty(64, np.int64)
    cell_x = np.empty(64, np.int64)
    cell_f = np.empty(64)
    # slot[dy + 1, dx + 1]: the index of offset (dy, dx) (>= 0), of -(dy, dx) (<= -2), or -1
    slot = np.full((3, 3), -1, np.int64)
    for j in range(offsets.shape[0]):
        slot[offsets[j, 0] + 1, offsets[j, 1] + 1] = j
        slot[1 - offsets[j, 0], 1 - offsets[j, 1]] = -2 - j
    n = 0
    for iy in range(hy):
        for ix in range(hx):
            p = iy * hx + ix
            if not good[p]:
                continue
            area = _footprint(kx, ky, cx, cy, iy, ix, shrink, qx, qy)
            if area <= 0.0:
                continue
            ox0 = int(np.floor(min(min(qx[0], qx[1]), min(qx[2], qx[3]))))
            ox1 = int(np.ceil(max(max(qx[0], qx[1]), max(qx[2], qx[3]))))
            oy0 = int(np.floor(min(min(qy[0], qy[1]), min(qy[2], qy[3]))))
            oy1 = int(np.ceil(max(max(qy[0], qy[1]), max(qy[2], qy[3]))))
            n_cells = 0
            for oy in range(max(oy0, 0), min(oy1, grid_ny)):
                for ox in range(max(ox0, 0), min(ox1, grid_nx)):
                    a = _cell_overlap(qx, qy, ox, oy)
                    if a <= 1e-12 or n_cells == 64:
                        continue
                    cell_y[n_cells], cell_x[n_cells] = oy, ox
                    cell_f[n_cells] = a / area * shrink * shrink
                    n_cells += 1
            for kk in range(k):
                z = z_idx[p, kk] - z0
                if f_z[p, kk] <= 0.0 or n_cells == 0:
                    continue
                by, bx, bw, b0 = boxes[z, 0], boxes[z, 2], boxes[z, 3] - boxes[z, 2], starts[z]
                for c in range(n_cells):
                    wf = cell_f[c] * f_z[p, kk]
                    if wf <= 0.0 or wf < min_overlap:
                        continue
                    v = b0 + (cell_y[c] - by) * bw + cell_x[c] - bx
                    w = weight[p] * wf
                    flux[v] += w * data[p]
                    wsum[v] += w
                    vsum[v] += w * w * var[p]
                    and_mask[v] &= flags[p]
                    or_mask[v] |= flags[p]
                    n += 1
                    # the pairs of this pixel's voxels in the plane, each once
                    for c2 in range(c + 1, n_cells):
                        wf2 = cell_f[c2] * f_z[p, kk]
                        if wf2 <= 0.0 or wf2 < min_overlap:
                            continue
                        dy, dx = cell_y[c2] - cell_y[c], cell_x[c2] - cell_x[c]
                        if dy < -1 or dy > 1 or dx < -1 or dx > 1:
                            continue
                        j = slot[dy + 1, dx + 1]
                        if j == -1:
                            continue
                        shared = w * weight[p] * wf2 * var[p]
                        if j >= 0:
                            cov[j, v] += shared
                        else:  # the offset starts from the second voxel
                            cov[-2 - j, b0 + (cell_y[c2] - by) * bw + cell_x[c2] - bx] += shared
    return n
