"""Per-image partial cubes and their combination (pure numpy; no Dask).

A partial cube holds, over the part of each plane its image reaches, the associative sums of the
drizzle: Σ w·f, Σ w, Σ w²σ² (w = spatial × spectral overlap × inverse variance), Σ w w' σ²
of neighbouring voxels sharing an input pixel (the noise the drizzle correlates), the number of
contributing images, and the AND / OR of the contributing pixels' flags. Partials add up in
any order; dividing happens once, at the end (:class:`DrizzleCube`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from ..photometry.background import fit_zodi_scale
from ..photometry.galaxy import TRUNCATE, galaxy_stamps, local_jacobian, models, shape_parameters
from ..spherex.channels import PIXEL_SCALE_ARCSEC
from ..spherex.flags import DEFAULT_BAD, Flag
from ..spherex.l2 import L2File
from ..spherex.units import UJY_ARCSEC2_PER_MJY_SR
from .config import Drizzle3DConfig
from .spatial import PixelTransform, input_window, map_window, pixel_geometry
from .spectral import ZGrid, spectral_overlaps
from .square import accumulate_square, plane_boxes

ALL_BITS = np.uint32(0xFFFFFFFF)
#: In-plane voxel offsets (dy, dx) whose shared noise the partial cubes record (a drizzle
#: footprint, about one output pixel across, reaches no further).
OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


def neighbour_slices(dy: int, dx: int, ny: int, nx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(rows, cols) slices of an (ny, nx) plane selecting the voxels o and, alike in shape,
    their neighbours o + (dy, dx), for every pair inside the plane (dy >= 0)."""
    return ((slice(0, ny - dy), slice(max(0, -dx), nx - max(0, dx))),
            (slice(dy, ny), slice(max(0, dx), nx - max(0, -dx))))


@dataclass(frozen=True)
class OutputGrid:
    """The cube's geometry, shared by every task of a detector (sent once).

    Parameters
    ----------
    wcs : WCS
        The celestial grid.
    shape : (int, int)
        (ny, nx).
    zgrid : ZGrid
        The planes.
    detector : int
    """

    wcs: WCS
    shape: tuple[int, int]  # (ny, nx)
    zgrid: ZGrid
    detector: int


class InputFrame(NamedTuple):
    """An image that went into a cube: what users cite, and what spectra from the frames read."""

    obs_id: str
    detector: int
    version: str
    weight: float  # Σ w it added over the cube's voxels
    file: str  # where it was read (path or URL)


class Plane(NamedTuple):
    """One plane of a partial cube: the cube's plane ``z``, the box of it (``rows``, ``cols``)
    the partial holds, and where that box's voxels lie in the partial's flat buffers."""

    z: int
    rows: slice
    cols: slice
    voxels: slice

    def of(self, buffer: np.ndarray) -> np.ndarray:
        """The plane's (rows, cols) view of a flat buffer (of each row of a 2-d one: ``cov``)."""
        shape = (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)
        return buffer[..., self.voxels].reshape(*buffer.shape[:-1], *shape)


@dataclass
class PartialCube:
    """Accumulation buffers of the planes z0, z0 + 1, ... of the cube an image reaches, each
    over only the box of rows and columns the image reaches in it (a frame's wavelengths run
    across it, so each plane gets a band of the frame), the boxes' voxels one after another
    in flat buffers (:meth:`planes` gives each plane's view).

    Parameters
    ----------
    z0 : int
        The first plane.
    boxes : ndarray
        (nz, 4) int: plane z0 + i holds rows ``boxes[i, 0]:boxes[i, 1]`` and columns
        ``boxes[i, 2]:boxes[i, 3]`` of the cube (none where empty).
    flux, weight, var : ndarray
        Σ w f, Σ w, Σ w² σ² per voxel held.
    count : ndarray
        Contributing images per voxel.
    and_mask, or_mask : ndarray
        AND and OR of the contributing pixels' FLAGS.
    plane_inputs : ndarray
        Images contributing to each plane (the full z axis).
    cov : ndarray
        (len(OFFSETS), n_voxels) float32: Σ w_o w_o+d σ² per offset d.
    n_inputs, n_rejected : int
        Images summed, and those that contributed nothing.
    rejected : list
        (image, reason) of each of those.
    inputs : list of InputFrame
        The images that contributed.
    """

    z0: int
    boxes: np.ndarray
    flux: np.ndarray
    weight: np.ndarray
    var: np.ndarray
    count: np.ndarray
    and_mask: np.ndarray
    or_mask: np.ndarray
    plane_inputs: np.ndarray  # images contributing to each z plane (full z axis)
    cov: np.ndarray  # (len(OFFSETS), n_voxels) float32: Σ w_o w_o+d σ² per offset d
    n_inputs: int = 1
    n_rejected: int = 0
    rejected: list = field(default_factory=list)  # (image, reason)
    inputs: list = field(default_factory=list)  # InputFrame of each image that contributed

    def __sizeof__(self) -> int:
        """Bytes held, buffers included: what Dask's memory accounting (``sys.getsizeof`` of
        a task result) needs to know of a partial cube."""
        return object.__sizeof__(self) + sum(getattr(self, name).nbytes for name in (*_SUMS, "plane_inputs"))

    @property
    def starts(self) -> np.ndarray:
        """(nz + 1,): where each plane's voxels start in the flat buffers, and their end."""
        return np.concatenate([[0], np.cumsum(_sizes(self.boxes))]).astype(np.int64)

    def planes(self) -> Iterator[Plane]:
        """The planes holding voxels, in order."""
        starts = self.starts
        for i, (y0, y1, x0, x1) in enumerate(self.boxes.tolist()):
            if starts[i + 1] > starts[i]:
                yield Plane(self.z0 + i, slice(y0, y1), slice(x0, x1), slice(int(starts[i]), int(starts[i + 1])))

    def voxel(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Where voxels (z, y, x) of the cube (each inside its plane's box) lie in the buffers."""
        i = z - self.z0
        box = self.boxes[i]
        return self.starts[i] + (y - box[:, 0]) * (box[:, 3] - box[:, 2]) + x - box[:, 2]

    @classmethod
    def empty(cls, n_z: int, *, boxes: np.ndarray | None = None, **meta) -> PartialCube:
        """Zero sums (an all-ones AND mask) over ``boxes``, (n_z, 4): per plane of the cube,
        the rows [y0, y1) and columns [x0, x1) to hold (none where empty); by default none."""
        z0, boxes = _held(np.zeros((0, 4), np.int64) if boxes is None else np.asarray(boxes, np.int64))
        n = int(_sizes(boxes).sum())
        return cls(z0, boxes, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, np.int32),
                   np.full(n, ALL_BITS, np.uint32), np.zeros(n, np.uint32), np.zeros(n_z, np.int32),
                   np.zeros((len(OFFSETS), n), np.float32), **meta)


#: A partial cube's sums, in the order :func:`combine` adds them.
_SUMS = ("flux", "weight", "var", "count", "and_mask", "or_mask", "cov")


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """Voxels in each box (y0, y1, x0, x1) of ``boxes``."""
    return (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])


def _held(boxes: np.ndarray) -> tuple[int, np.ndarray]:
    """The first plane and the boxes from it to the last of ``boxes`` (n_z, 4) that hold
    voxels; the empty ones between set to (0, 0, 0, 0)."""
    held = np.flatnonzero((boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2]))
    if not held.size:
        return 0, np.zeros((0, 4), np.int64)
    out = boxes[held[0]:held[-1] + 1].copy()
    out[(out[:, 1] <= out[:, 0]) | (out[:, 3] <= out[:, 2])] = 0
    return int(held[0]), out


def _bounds(n_z: int) -> np.ndarray:
    """(n_z, 4) per-plane box bounds that hold nothing yet, for np.minimum / np.maximum."""
    out = np.zeros((n_z, 4), np.int64)
    out[:, 0] = out[:, 2] = np.iinfo(np.int64).max
    return out


def rejected(n_z: int, image: str, reason: str) -> PartialCube:
    """The partial of an image that contributed nothing, with the reason."""
    return PartialCube.empty(n_z, n_inputs=1, n_rejected=1, rejected=[(image, reason)])


def combine(*partials: PartialCube) -> PartialCube:
    """The sum of partials, each plane over the union of their boxes in it (one allocation,
    each added once; a copy of the largest when it holds that union, as a running sum does).

    Parameters
    ----------
    *partials : PartialCube

    Returns
    -------
    PartialCube
    """
    full = [p for p in partials if p.flux.size]
    inputs = np.sum([p.plane_inputs for p in partials], axis=0)
    meta: dict[str, Any] = {"n_inputs": sum(p.n_inputs for p in partials),
                            "n_rejected": sum(p.n_rejected for p in partials),
                            "rejected": [r for p in partials for r in p.rejected],
                            "inputs": [f for p in partials for f in p.inputs]}
    if len(full) <= 1:
        return replace(full[0] if full else PartialCube.empty(inputs.size), plane_inputs=inputs, **meta)
    bounds = _bounds(inputs.size)
    for p in full:
        for plane in p.planes():
            y0, y1, x0, x1 = bounds[plane.z]
            bounds[plane.z] = (min(y0, plane.rows.start), max(y1, plane.rows.stop),
                               min(x0, plane.cols.start), max(x1, plane.cols.stop))
    z0, boxes = _held(bounds)
    largest = max(full, key=lambda p: p.flux.size)
    if largest.z0 == z0 and np.array_equal(largest.boxes, boxes):
        out = replace(largest, **{name: getattr(largest, name).copy() for name in _SUMS}, **meta)
        full = [p for p in full if p is not largest]
    else:
        out = PartialCube.empty(inputs.size, boxes=bounds, **meta)
    out.plane_inputs = inputs
    into = {plane.z: plane for plane in out.planes()}
    for p in full:
        for plane in p.planes():
            to = into[plane.z]
            at = (slice(plane.rows.start - to.rows.start, plane.rows.stop - to.rows.start),
                  slice(plane.cols.start - to.cols.start, plane.cols.stop - to.cols.start))
            to.of(out.flux)[at] += plane.of(p.flux)
            to.of(out.weight)[at] += plane.of(p.weight)
            to.of(out.var)[at] += plane.of(p.var)
            to.of(out.count)[at] += plane.of(p.count)
            to.of(out.and_mask)[at] &= plane.of(p.and_mask)
            to.of(out.or_mask)[at] |= plane.of(p.or_mask)
            to.of(out.cov)[(slice(None), *at)] += plane.of(p.cov)
    return out


def partial_cube(l2: L2File, grid: OutputGrid, config: Drizzle3DConfig) -> PartialCube:
    """Drizzle one image into a partial cube holding, per plane, the box it reaches there.

    Parameters
    ----------
    l2 : L2File
        The image.
    grid : OutputGrid
        The cube's grid.
    config : Drizzle3DConfig
        How the cube is made.

    Returns
    -------
    PartialCube
        Rejected (empty, with the reason) when the image does not overlap the grid.
    """
    window = input_window(l2.wcs, l2.shape, grid.wcs, grid.shape)
    if window is None:
        return rejected(grid.zgrid.n_z, l2.source, "no spatial overlap with the output grid")
    pixels = _pixels(l2, window, config, subtract_zodi=config.subtract_zodi)
    return _drizzled(l2, grid, config, window, pixels, pixels.data)


def unit_source_cubes(l2: L2File, grid: OutputGrid, config: Drizzle3DConfig, grids: list[OutputGrid],
                      ra: np.ndarray, dec: np.ndarray, *, shapes: pd.DataFrame | None = None) -> list[PartialCube]:
    """How the drizzle renders a source: for each position (ra[k], dec[k]; deg), a
    flat-spectrum source of 1 µJy there (the file's PSF, or its galaxy profile through it)
    drizzled through the image's own pixels, masks and weights onto ``grids[k]`` (a part of
    ``grid``). The image's pixels are read once for them all.

    Parameters
    ----------
    l2 : L2File
        The image.
    grid : OutputGrid
        The cube's grid.
    config : Drizzle3DConfig
        How the cube was made.
    grids : list of OutputGrid
        One small grid (a cut-out of ``grid``) per source.
    ra, dec : ndarray
        The sources' positions.
    shapes : DataFrame, optional
        One row per source with its Tractor ``type``, ``shape_r``, ``shape_e1``,
        ``shape_e2``, ``sersic`` (:func:`~spxdask.photometry.galaxy.models`): galaxies are
        rendered with their profile. Default: every source a point.

    Returns
    -------
    list of PartialCube
        One per source, on its grid (rejected where the image does not reach it).
    """
    n_z = grid.zgrid.n_z
    window = input_window(l2.wcs, l2.shape, grid.wcs, grid.shape)
    if window is None:
        return [rejected(n_z, l2.source, "no spatial overlap with the output grid") for _ in grids]
    pixels = _pixels(l2, window, config, subtract_zodi=False)
    x, y = (np.atleast_1d(np.asarray(v, float)) for v in l2.wcs.all_world2pix(ra, dec, 0))
    # a stamp need not reach beyond the largest cut-out (native pixels)
    span = int(np.ceil(max(max(g.shape) for g in grids) * config.pixscale / PIXEL_SCALE_ARCSEC))
    stamps = _unit_stamps(l2, x, y, shapes, span) / (UJY_ARCSEC2_PER_MJY_SR * l2.pixel_area(x, y))[:, None, None]
    out = []
    for sub, stamp, ix, iy in zip(grids, stamps, np.round(x).astype(int), np.round(y).astype(int)):
        part = input_window(l2.wcs, l2.shape, sub.wcs, sub.shape)
        rows = slice(max(part[0].start, window[0].start), min(part[0].stop, window[0].stop)) if part else slice(0, 0)
        cols = slice(max(part[1].start, window[1].start), min(part[1].stop, window[1].stop)) if part else slice(0, 0)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            out.append(rejected(n_z, l2.source, "no spatial overlap with the output grid"))
            continue
        inner = (slice(rows.start - window[0].start, rows.stop - window[0].start),
                 slice(cols.start - window[1].start, cols.stop - window[1].start))
        cut = _Pixels(*(a[inner] for a in pixels))
        out.append(_drizzled(l2, sub, config, (rows, cols), cut, _placed(stamp, iy - rows.start, ix - cols.start,
                                                                          (rows.stop - rows.start, cols.stop - cols.start))))
    return out


def _unit_stamps(l2: L2File, x: np.ndarray, y: np.ndarray, shapes: pd.DataFrame | None, span: int) -> np.ndarray:
    """Unit-flux native-pixel stamps of sources at (x, y) of ``l2``: the PSF, or for the
    galaxies of ``shapes`` their profile through it (stamps as wide as the largest, up to
    ``span`` pixels beyond the PSF's)."""
    psf = l2.psf
    m = int(np.ceil(psf.half_width()))
    xp, yp = l2.parent_pixel(x, y)
    stamps = psf.stamps(xp, yp, m)
    if shapes is None:
        return stamps
    model = models(shapes)
    extended = np.flatnonzero(model != "PSF")
    if not extended.size:
        return stamps
    n, r_e, q, theta = shape_parameters(shapes.iloc[extended], model[extended])
    reach = min(int(np.ceil(TRUNCATE * r_e.max() / PIXEL_SCALE_ARCSEC)), span)
    wide = np.zeros((x.size, 2 * (m + reach) + 1, 2 * (m + reach) + 1))
    wide[:, reach:reach + 2 * m + 1, reach:reach + 2 * m + 1] = stamps
    wide[extended] = galaxy_stamps(psf, xp[extended], yp[extended], local_jacobian(l2.wcs, x[extended], y[extended]),
                                   n, r_e, q, theta, m + reach)
    return wide


class _Pixels(NamedTuple):
    """An image window's pixels as the drizzle takes them."""

    data: np.ndarray
    var: np.ndarray
    flags: np.ndarray
    lam: np.ndarray
    dlam: np.ndarray
    good: np.ndarray
    weight: np.ndarray


def _pixels(l2: L2File, window: tuple[slice, slice], config: Drizzle3DConfig, *, subtract_zodi: bool) -> _Pixels:
    data = l2.image(section=window).astype(np.float64)
    var = l2.variance(section=window).astype(np.float64)
    flags = l2.flags(section=window).astype(np.uint32)
    if subtract_zodi:
        scale = 1.0 if config.static_zodi else fit_zodi_scale(
            l2.raw("IMAGE"), l2.raw("ZODI"), l2.raw("VARIANCE"), l2.raw("FLAGS"), DEFAULT_BAD | Flag.SOURCE, 0.0, 10.0)
        data -= scale * l2.zodi(section=window)
    lam, dlam = l2.wavelength_map(section=window)
    with np.errstate(invalid="ignore", divide="ignore"):
        good = (np.isfinite(data) & np.isfinite(var) & (var > 0) & np.isfinite(lam) & (lam > 0)
                & np.isfinite(dlam) & (dlam > 0) & ((flags & np.uint32(config.exclude_mask)) == 0))
        weight = np.minimum(1.0 / _weighting_variance(var, good, config.weighting), config.ivar_max)
    return _Pixels(data, var, flags, lam, dlam, good, weight)


def _drizzled(l2: L2File, grid: OutputGrid, config: Drizzle3DConfig, window: tuple[slice, slice], pixels: _Pixels,
              data: np.ndarray) -> PartialCube:
    """``data`` (the window's image, or a model of it) drizzled with the window's pixels."""
    transform = PixelTransform(l2.wcs, grid.wcs, window)
    z_all, f_all = spectral_overlaps(pixels.lam.ravel(), pixels.dlam.ravel(), config.effective_z_shrink(),
                                     grid.zgrid.edges)
    good, weight = pixels.good.ravel(), pixels.weight.ravel()
    kernel = _square if config.kernel == "square" else _pairs
    out = kernel(transform, window, grid, config, good, weight, data, pixels.var, pixels.flags, z_all, f_all)
    if out is None:
        return rejected(grid.zgrid.n_z, l2.source, "no valid pixel lands in the output grid")
    out.count = (out.weight > 0).astype(np.int32)
    for plane in out.planes():
        out.plane_inputs[plane.z] = out.count[plane.voxels].any()
    meta = l2.meta
    out.inputs = [InputFrame(meta.obs_id, int(meta.detector), meta.version, float(out.weight.sum()), str(l2.source))]
    return out


def _placed(stamp: np.ndarray, iy: int, ix: int, shape: tuple[int, int]) -> np.ndarray:
    """An image of ``shape``, zero but for ``stamp`` centred on pixel (iy, ix) (clipped)."""
    image = np.zeros(shape)
    m = stamp.shape[0] // 2
    y0, x0 = iy - m, ix - m
    ys = slice(max(y0, 0), min(y0 + 2 * m + 1, shape[0]))
    xs = slice(max(x0, 0), min(x0 + 2 * m + 1, shape[1]))
    if ys.start < ys.stop and xs.start < xs.stop:
        image[ys, xs] = stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return image


def _weighting_variance(var: np.ndarray, good: np.ndarray, weighting: str) -> np.ndarray:
    """The variance the drizzle weights are the inverse of: each pixel's own (``"ivar"``, the
    reference), or the median of its row's good pixels (``"background"``: the sky and read
    noise without a source's own photon noise, which would weight a source's bright pixels
    down and bias its flux low; rows follow the wavelength, hence the zodiacal light)."""
    if weighting == "ivar":
        return var
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a good pixel: never used
        # every 4th pixel of a row gives its background level as well, 4x faster
        level = np.nanmedian(np.where(good[:, ::4], var[:, ::4], np.nan), axis=1)
    return np.broadcast_to(level[:, None], var.shape)


def _square(transform, window, grid: OutputGrid, config: Drizzle3DConfig, good, weight, data, var, flags,
            z_all, f_all) -> PartialCube | None:
    """The square kernel, compiled: each pixel's overlaps accumulated in place."""
    cx, cy, kx, ky = pixel_geometry(transform, window)
    ny, nx = grid.shape
    hit = good & (f_all > 0).any(axis=1)
    if not hit.any():
        return None
    shrink = float(config.xy_shrink)
    out = PartialCube.empty(grid.zgrid.n_z, boxes=plane_boxes(kx, ky, cx, cy, shrink, hit, z_all, f_all, ny, nx,
                                                               grid.zgrid.n_z), n_inputs=1)
    if not out.flux.size:
        return None
    n = accumulate_square(kx, ky, cx, cy, shrink, hit, weight, data.ravel(), var.ravel(), flags.ravel(), z_all, f_all,
                          float(config.min_overlap), ny, nx, out.z0, out.boxes, out.starts, out.flux, out.weight,
                          out.var, out.and_mask, out.or_mask, np.array(OFFSETS, np.int64), out.cov)
    return out if n else None


def _pairs(transform, window, grid: OutputGrid, config: Drizzle3DConfig, good, weight, data, var, flags,
           z_all, f_all) -> PartialCube | None:
    """Any kernel, through the list of (pixel, output pixel, weight) pairs of :func:`map_window`."""
    pixel, oy, ox, f_xy = map_window(transform, window, grid.shape, config.xy_shrink, config.kernel)
    keep = good[pixel]
    pixel, oy, ox, f_xy = pixel[keep], oy[keep], ox[keep], f_xy[keep]
    wf = f_xy[:, None] * f_all[pixel]
    sel = (wf > 0) & (wf >= config.min_overlap)
    if not sel.any():
        return None
    row, col = np.nonzero(sel)
    wf, z, src, yy, xx = wf[row, col], z_all[pixel[row], col], pixel[row], oy[row], ox[row]
    bounds = _bounds(grid.zgrid.n_z)
    np.minimum.at(bounds[:, 0], z, yy)
    np.maximum.at(bounds[:, 1], z, yy + 1)
    np.minimum.at(bounds[:, 2], z, xx)
    np.maximum.at(bounds[:, 3], z, xx + 1)
    out = PartialCube.empty(grid.zgrid.n_z, boxes=bounds, n_inputs=1)
    flat = out.voxel(z, yy, xx)
    size = out.flux.size
    w = weight[src] * wf
    out.flux = np.bincount(flat, w * data.ravel()[src], size)
    out.weight = np.bincount(flat, w, size)
    out.var = np.bincount(flat, w * w * var.ravel()[src], size)
    _flag_masks(out, flat, flags.ravel()[src])
    _shared_noise(out, src, z, yy, xx, w, var.ravel()[src])
    return out


def _shared_noise(out: PartialCube, src: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray, w: np.ndarray,
                  var: np.ndarray) -> None:
    """Σ w w' σ² of the voxel pairs (o, o + d) of one plane fed by the same input pixel, for
    the contributions (input pixel ``src``, cube voxel (z, y, x), weight ``w``) of a window."""
    order = np.lexsort((x, y, z, src))
    src, z, y, x, w, var = src[order], z[order], y[order], x[order], w[order], var[order]
    for shift in range(1, 16):  # a pixel feeds at most a few voxels of a plane
        same = (src[shift:] == src[:-shift]) & (z[shift:] == z[:-shift])
        if not same.any():
            break
        i = np.flatnonzero(same)
        j = i + shift
        dy, dx = y[j] - y[i], x[j] - x[i]
        for k, (oy, ox) in enumerate(OFFSETS):
            for sign in (1, -1):
                hit = (dy == sign * oy) & (dx == sign * ox)
                at = i[hit] if sign > 0 else j[hit]  # the voxel the offset starts from
                np.add.at(out.cov[k], out.voxel(z[at], y[at], x[at]), (w[i[hit]] * w[j[hit]] * var[i[hit]]).astype(np.float32))


def _flag_masks(out: PartialCube, flat: np.ndarray, pix_flags: np.ndarray) -> None:
    """AND / OR of the contributing pixels' flags per voxel. Only flagged contributions go
    through the (slow) unbuffered ``ufunc.at``; any unflagged one makes the AND zero."""
    flagged = pix_flags != 0
    np.bitwise_or.at(out.or_mask, flat[flagged], pix_flags[flagged])
    np.bitwise_and.at(out.and_mask, flat[flagged], pix_flags[flagged])
    out.and_mask[np.bincount(flat[~flagged], minlength=out.and_mask.size) > 0] = 0
