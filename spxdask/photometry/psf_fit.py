"""Forced PSF photometry of all catalog sources of one image at once (no Dask).

The model of the image near the sources is ``Σ_k f_k P_k + b``: ``P_k`` the file's PSF of the
zone holding source k, integrated over native pixels at its sub-pixel position and cut to a
(2m+1)² box; ``b`` the background. The fit pixels are the usable pixels (in the image, no bad
flag bit, finite value and variance) within the fit radius of any source; each is weighted by
1 / VARIANCE. The weighted linear least-squares problem for all fluxes at once has a sparse
normal matrix, since a source couples only to the sources whose boxes overlap its own:

1. one compiled pass over the sources' boxes, read in place: values (image - zodi), weights,
   the normal-matrix diagonal and right-hand side, and with ``background="fit"`` the sums of
   one background level per square tile of the image (more unknowns, coupled to the sources
   whose fit pixels they hold);
2. the neighbour pairs (boxes overlap) from a cell list, their normal-matrix entries
   (compiled), the matrix assembled by :mod:`scipy.sparse`;
3. the system solved by conjugate gradients with a Jacobi preconditioner (sparse LU, SuperLU,
   when CG stalls on a near-degenerate pair), faster than LU alone (docs' benchmark page);
4. errors from the inverse of the normal matrix restricted to each source and its direct
   neighbours (sources and tiles): the flux variance with the neighbours' fluxes free.
   Conditioning on the neighbours' neighbours changes it by far less than its own
   uncertainty (a test compares it with the dense inverse).

With ``background="local"`` each source's pixels carry the local background the aperture
kernel measured for it instead of fitted tile levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg, splu

from ..spherex.stored import as_words, f32, i32

#: |correlation| of a flux with a neighbour's above which the pair counts as degenerate.
DEGENERATE_CORRELATION = 0.9
#: Relative ridge added to the normal matrix diagonal: keeps exact duplicates solvable, with
#: (honestly) huge errors on their split.
_RIDGE = 1e-10
_CG_RTOL, _CG_MAXITER = 1e-10, 300


class PSFFit(NamedTuple):
    """What :func:`fit_psf` measures, per source (image units x pixels for fluxes)."""

    flux: np.ndarray  # NaN when the source has no usable fit pixel
    variance: np.ndarray
    chi2: np.ndarray  # reduced chi^2 over the source's fit pixels
    n_neighbours: np.ndarray  # sources whose PSF box overlaps this one's fit pixels
    corr_max: np.ndarray  # largest |correlation| of this flux with a neighbour's
    n_bad: np.ndarray  # unusable pixels within the fit radius
    edge: np.ndarray  # the fit circle crosses the image edge


@numba.njit(cache=True)
def _fit_mask(ny, nx, x, y, ix, iy, r2, m):
    """1 for the pixels within sqrt(r2) of any source (their centres), else 0."""
    mask = np.zeros((ny, nx), np.uint8)
    for k in range(x.size):
        for a in range(-m, m + 1):
            row = iy[k] + a
            if row < 0 or row >= ny:
                continue
            for b in range(-m, m + 1):
                col = ix[k] + b
                if col >= 0 and col < nx and (col - x[k]) ** 2 + (row - y[k]) ** 2 <= r2:
                    mask[row, col] = 1
    return mask


@numba.njit(cache=True)
def _boxes(image, zodi, variance, flags, swaps, s, mask, stamps, x, y, ix, iy, r2, bad_mask, tile, ntx, n_tiles):
    """One pass over the sources' (2m+1)² boxes, reading the image HDUs in place. Per source:
    the values (image - s zodi) and weights (1/variance on usable fit pixels, else 0) of its
    box, Σ w P², Σ w P v, the (at most 4) background tiles its box touches with Σ w P over the
    box pixels in each (-1: unused slot), and within its own fit radius the usable and
    unusable pixel counts and whether the circle leaves the image. Per tile: Σ w and Σ w v
    over its usable fit pixels, each pixel counted once (``mask`` marks the counted ones)."""
    ny, nx = image.shape
    n, size = x.size, stamps.shape[1]
    m = size // 2
    value = np.zeros((n, size, size))
    weight = np.zeros((n, size, size))
    diag = np.zeros(n)
    rhs = np.zeros(n)
    tiles = np.full((n, 4), -1, np.int64)
    tile_sums = np.zeros((n, 4))
    n_used = np.zeros(n, np.int64)
    n_bad = np.zeros(n, np.int16)
    edge = np.zeros(n, np.bool_)
    sw = np.zeros(n_tiles)
    swv = np.zeros(n_tiles)
    for k in range(n):
        for a in range(size):
            row = iy[k] + a - m
            for b in range(size):
                col = ix[k] + b - m
                mine = (col - x[k]) ** 2 + (row - y[k]) ** 2 <= r2
                if row < 0 or row >= ny or col < 0 or col >= nx:
                    edge[k] |= mine
                    continue
                if mask[row, col] == 0:
                    continue
                v = f32(image, row, col, swaps[0]) - s * f32(zodi, row, col, swaps[1])
                var = f32(variance, row, col, swaps[2])
                if not ((i32(flags, row, col, swaps[3]) & bad_mask) == 0 and np.isfinite(v) and var > 0):
                    n_bad[k] += mine
                    continue
                w = 1.0 / var
                p = stamps[k, a, b]
                value[k, a, b] = v
                weight[k, a, b] = w
                n_used[k] += mine
                diag[k] += w * p * p
                rhs[k] += w * p * v
                t = (row // tile) * ntx + col // tile
                for slot in range(4):
                    if tiles[k, slot] == t or tiles[k, slot] < 0:
                        tiles[k, slot] = t
                        tile_sums[k, slot] += w * p
                        break
                if mask[row, col] == 1:
                    mask[row, col] = 2
                    sw[t] += w
                    swv[t] += w * v
    return value, weight, diag, rhs, tiles, tile_sums, n_used, n_bad, edge, sw, swv


@numba.njit(cache=True)
def _pairs(ix, iy, sources, reach):
    """The pairs (k, l), k < l, of ``sources`` whose pixel centres differ by at most ``reach``
    in both x and y: cells of side reach + 1 sorted by index, each source against its own and
    the 8 surrounding cells."""
    side = reach + 1
    x0, y0 = ix[sources].min(), iy[sources].min()
    ncx = (ix[sources].max() - x0) // side + 1
    ncy = (iy[sources].max() - y0) // side + 1
    cell = ((iy[sources] - y0) // side) * ncx + (ix[sources] - x0) // side
    order = np.argsort(cell)
    start = np.searchsorted(cell[order], np.arange(ncx * ncy + 1))
    count = np.zeros(sources.size, np.int64)
    for fill in range(2):
        if fill:
            start_of = np.concatenate((np.zeros(1, np.int64), np.cumsum(count)))
            first = np.empty(start_of[-1], np.int64)
            second = np.empty(start_of[-1], np.int64)
        for p in range(sources.size):
            k = sources[p]
            cx, cy = (ix[k] - x0) // side, (iy[k] - y0) // side
            found = 0
            for gy in range(max(cy - 1, 0), min(cy + 2, ncy)):
                for gx in range(max(cx - 1, 0), min(cx + 2, ncx)):
                    g = gy * ncx + gx
                    for q in order[start[g]:start[g + 1]]:
                        q_src = sources[q]
                        if q_src > k and abs(ix[q_src] - ix[k]) <= reach and abs(iy[q_src] - iy[k]) <= reach:
                            if fill:
                                first[start_of[p] + found] = k
                                second[start_of[p] + found] = q_src
                            found += 1
            count[p] = found
    return first, second


@numba.njit(cache=True)
def _pair_entries(stamps, weight, ix, iy, first, second):
    """Σ w P_k P_l over the pixels the boxes of each pair (k, l) share."""
    size = stamps.shape[1]
    out = np.zeros(first.size)
    for p in range(first.size):
        k, q = first[p], second[p]
        dy, dx = iy[q] - iy[k], ix[q] - ix[k]
        acc = 0.0
        for a in range(max(0, dy), min(size, size + dy)):
            for b in range(max(0, dx), min(size, size + dx)):
                acc += weight[k, a, b] * stamps[k, a, b] * stamps[q, a - dy, b - dx]
        out[p] = acc
    return out


@numba.njit(cache=True)
def _spd_inverse(a):
    """Inverse of a small symmetric positive-definite matrix (Gauss-Jordan, no pivoting: the
    diagonal of an SPD matrix stays positive), in place."""
    k = a.shape[0]
    for p in range(k):
        piv = 1.0 / a[p, p]
        a[p, p] = 1.0
        for j in range(k):
            a[p, j] *= piv
        for i in range(k):
            if i != p and a[i, p] != 0.0:
                f = a[i, p]
                a[i, p] = 0.0
                for j in range(k):
                    a[i, j] -= f * a[p, j]
    return a


@numba.njit(cache=True)
def _local_inverse(indptr, indices, data, n_src, diag):
    """Per source i: the inverse of the normal matrix restricted to i and its direct neighbours
    (rows of the symmetric CSR matrix); returns its (i, i) entry and the largest |correlation|
    of i with a neighbouring source."""
    var = np.full(n_src, np.nan)
    corr = np.zeros(n_src)
    for i in range(n_src):
        lo, hi = indptr[i], indptr[i + 1]
        idx = np.empty(hi - lo + 1, np.int64)
        idx[0] = i
        k = 1
        for p in range(lo, hi):
            if indices[p] != i:
                idx[k] = indices[p]
                k += 1
        idx = idx[:k]
        block = np.zeros((k, k))
        for a in range(k):
            r = idx[a]
            for p in range(indptr[r], indptr[r + 1]):
                c = indices[p]
                for b in range(k):
                    if idx[b] == c:
                        block[a, b] = data[p]
                        break
            block[a, a] += _RIDGE * diag[r]
        inv = _spd_inverse(block)
        var[i] = inv[0, 0]
        for b in range(1, k):
            if idx[b] < n_src and inv[b, b] > 0:
                corr[i] = max(corr[i], abs(inv[0, b]) / np.sqrt(inv[0, 0] * inv[b, b]))
    return var, corr


@numba.njit(cache=True)
def _chi2(stamps, value, weight, flux, first, second, level_of_tile, tile, ntx, ix, iy, x, y, r2):
    """Reduced chi^2 of each source over its own usable fit pixels: the model in its box is its
    own PSF, its coupled neighbours' (``first``, ``second``) and the tile levels."""
    n, size = stamps.shape[0], stamps.shape[1]
    m = size // 2
    model = np.zeros((n, size, size))
    for p in range(first.size):
        k, q = first[p], second[p]
        dy, dx = iy[q] - iy[k], ix[q] - ix[k]
        for a in range(max(0, dy), min(size, size + dy)):
            for b in range(max(0, dx), min(size, size + dx)):
                model[k, a, b] += flux[q] * stamps[q, a - dy, b - dx]
                model[q, a - dy, b - dx] += flux[k] * stamps[k, a, b]
    out = np.full(n, np.nan)
    for k in range(n):
        if not np.isfinite(flux[k]):
            continue
        chi, used = 0.0, 0
        for a in range(size):
            row = iy[k] + a - m
            row_tile = (row // tile) * ntx
            for b in range(size):
                col = ix[k] + b - m
                w = weight[k, a, b]
                if w == 0 or (col - x[k]) ** 2 + (row - y[k]) ** 2 > r2:
                    continue
                level = level_of_tile[row_tile + col // tile]
                chi += w * (value[k, a, b] - flux[k] * stamps[k, a, b] - model[k, a, b] - level) ** 2
                used += 1
        if used > 1:
            out[k] = chi / (used - 1)
    return out


def _solve(normal: sp.csr_matrix, rhs: np.ndarray) -> np.ndarray:
    """The solution of the sparse SPD system: conjugate gradients with a Jacobi preconditioner
    (a few ms for 20,000 sources), sparse LU when CG stalls on a near-degenerate pair."""
    solution, info = cg(normal, rhs, M=sp.diags(1.0 / normal.diagonal()), rtol=_CG_RTOL, maxiter=_CG_MAXITER)
    if info != 0:
        solution = splu(normal.tocsc()).solve(rhs)
    return solution


def fit_psf(image: np.ndarray, zodi: np.ndarray, variance: np.ndarray, flags: np.ndarray, zodi_scale: float,
            x: np.ndarray, y: np.ndarray, stamps: np.ndarray, *, radius: float, bad_mask: int,
            background: str = "fit", tile: int = 64, local_background: np.ndarray | None = None) -> PSFFit:
    """Fit the fluxes of all sources at (x, y) jointly (:func:`fit_models` with one set of
    stamps).

    Parameters
    ----------
    image, zodi, variance, flags : ndarray
        The image HDUs as stored (memory-mapped, any byte order).
    zodi_scale : float
        Amplitude of ``zodi`` subtracted from ``image``.
    x, y : ndarray
        0-based pixel positions of every source to fit (targets and neighbours).
    stamps : ndarray
        (n, 2m+1, 2m+1) unit-flux PSF stamps centred on pixel (round(y), round(x)).
    radius : float
        Fit radius (pixels): pixels within it of any source enter the fit; m >= radius.
    bad_mask : int
        FLAGS bits whose pixels are left out.
    background : {"fit", "local"}
        ``"fit"``: one background level per ``tile`` x ``tile`` pixel tile, fitted with the
        fluxes; ``"local"``: ``local_background`` (per source, image units) subtracted from
        each source's pixels.

    Returns
    -------
    PSFFit
        Per source: flux and variance (image units x pixels), reduced chi^2, neighbours,
        largest correlation, unusable pixels and edge crossing within the fit radius.
    """
    return fit_models(image, zodi, variance, flags, zodi_scale, x, y, [stamps], radius=radius, bad_mask=bad_mask,
                      background=background, tile=tile, local_background=local_background)[0]


def fit_models(image: np.ndarray, zodi: np.ndarray, variance: np.ndarray, flags: np.ndarray, zodi_scale: float,
               x: np.ndarray, y: np.ndarray, models: Sequence[np.ndarray], *, radius: float, bad_mask: int,
               background: str = "fit", tile: int = 64, local_background: np.ndarray | None = None) -> list[PSFFit]:
    """The joint fit of the sources at (x, y), once per set of unit-flux stamps in ``models``
    (e.g. every source a point, then each with its own profile): the pixels are read once.

    Parameters
    ----------
    image, zodi, variance, flags, zodi_scale, x, y
        As :func:`fit_psf`.
    models : sequence of ndarray
        Sets of (n, 2m+1, 2m+1) stamps, each as :func:`fit_psf`'s ``stamps``.
    radius, bad_mask, background, tile, local_background
        As :func:`fit_psf`.

    Returns
    -------
    list of PSFFit
        One per set of stamps.
    """
    stamps = models[0]
    x, y = np.asarray(x, float), np.asarray(y, float)
    n, size = x.size, stamps.shape[1]
    m = size // 2
    ny, nx = image.shape
    if n == 0:
        empty = np.empty(0)
        return [PSFFit(empty, empty, empty, np.empty(0, np.int32), empty, np.empty(0, np.int16), np.empty(0, bool))
                for _ in models]
    ix, iy = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    r2 = float(radius) ** 2
    words, swaps = as_words([image, zodi, variance, flags], "fffi")
    s = np.float32(zodi_scale)
    mask = _fit_mask(ny, nx, x, y, ix, iy, r2, m)
    ntx = -(-nx // tile)
    level_of_tile = np.zeros(ntx * -(-ny // tile))
    (value, weight, diag, rhs, tiles, tile_sums, n_used, n_bad, edge,
     sw, swv) = _boxes(*words, swaps, s, mask, stamps, x, y, ix, iy, r2,  # type: ignore[call-arg]
                       int(bad_mask), tile, ntx, level_of_tile.size)
    if background == "local":
        local = np.nan_to_num(np.asarray(local_background, float))
        value -= local[:, None, None]
        rhs -= local * tile_sums.sum(axis=1)

    # unknowns: the sources with usable pixels, then the fitted tiles
    active = np.flatnonzero(n_used > 0)
    pairs = _pairs(ix, iy, active, 2 * m) if active.size else (active, active)
    first_sums = (diag, rhs, tile_sums)
    fits = []
    for k, model in enumerate(models):
        sums = first_sums
        if k:  # the same pixels, another model: the sums of the stamps that changed, from the values read
            sums = tuple(a.copy() for a in first_sums)
            changed = np.flatnonzero((model != stamps).any(axis=(1, 2)))
            for a, b in zip(sums, _model_sums(value[changed], weight[changed], model[changed], tiles[changed],
                                             ix[changed], iy[changed], tile, ntx)):
                a[changed] = b
        fits.append(_solved(model, value, weight, *sums, tiles, n_used, n_bad, edge, sw, swv, active,
                            pairs, background, level_of_tile.copy(), tile, ntx, ix, iy, x, y, r2))
    return fits


def _model_sums(value: np.ndarray, weight: np.ndarray, stamps: np.ndarray, tiles: np.ndarray, ix: np.ndarray,
                iy: np.ndarray, tile: int, ntx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`_boxes` sums with the stamps, for other stamps: Σ w P², Σ w P v and, per
    tile slot, Σ w P over the box pixels in that tile."""
    m = stamps.shape[1] // 2
    offs = np.arange(-m, m + 1)
    rows, cols = iy[:, None] + offs, ix[:, None] + offs
    tile_of = (rows // tile)[:, :, None] * ntx + (cols // tile)[:, None, :]
    wp = weight * stamps
    tile_sums = np.stack([np.where(tile_of == tiles[:, k, None, None], wp, 0.0).sum(axis=(1, 2))
                          for k in range(tiles.shape[1])], axis=1)
    return (wp * stamps).sum(axis=(1, 2)), (wp * value).sum(axis=(1, 2)), tile_sums


def _solved(stamps, value, weight, diag, rhs, tile_sums, tiles, n_used, n_bad, edge, sw, swv, active, pairs,
            background, level_of_tile, tile, ntx, ix, iy, x, y, r2) -> PSFFit:
    """The joint solution for one set of stamps (see :func:`fit_psf`)."""
    n = x.size
    slot = np.full(n, -1)
    slot[active] = np.arange(active.size)
    first, second = pairs
    cross = _pair_entries(stamps, weight, ix, iy, first, second)
    coupled = cross != 0
    first, second, cross = first[coupled], second[coupled], cross[coupled]
    rows = [slot[first], slot[second], np.arange(active.size)]
    cols = [slot[second], slot[first], np.arange(active.size)]
    vals = [cross, cross, diag[active]]
    rhs = rhs[active]
    if background == "fit":
        fitted = np.flatnonzero(sw > 0)
        slot_of_tile = np.full(level_of_tile.size, -1)
        slot_of_tile[fitted] = active.size + np.arange(fitted.size)
        src, which = np.nonzero(tiles[active] >= 0)
        t_slot, t_sum = slot_of_tile[tiles[active][src, which]], tile_sums[active][src, which]
        rows += [src, t_slot, slot_of_tile[fitted]]
        cols += [t_slot, src, slot_of_tile[fitted]]
        vals += [t_sum, t_sum, sw[fitted]]
        rhs = np.concatenate([rhs, swv[fitted]])
    size_sys = rhs.size
    normal = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(size_sys, size_sys))
    normal.sum_duplicates()
    full_diag = normal.diagonal()
    solution = _solve(normal + sp.diags(_RIDGE * full_diag), rhs)
    var_active, corr_active = _local_inverse(normal.indptr, normal.indices.astype(np.int64), normal.data,
                                             active.size, full_diag)

    flux = np.full(n, np.nan)
    var = np.full(n, np.nan)
    corr = np.zeros(n)
    flux[active], var[active], corr[active] = solution[:active.size], var_active, corr_active
    if background == "fit":
        level_of_tile[fitted] = solution[active.size:]
    chi2 = _chi2(stamps, value, weight, flux, first, second, level_of_tile, tile, ntx, ix, iy, x, y, r2)
    neighbours = np.bincount(np.concatenate([first, second]), minlength=n).astype(np.int32)
    return PSFFit(flux, var, chi2, neighbours, corr, n_bad, edge)
