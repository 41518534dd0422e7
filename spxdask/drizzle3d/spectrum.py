"""Spectra of sources taken from a cube, with errors that know the drizzle's correlated noise
(pure numpy; no Dask).

Drizzling spreads each input pixel over several output pixels, so neighbouring voxels of a
plane share noise: a plain sum of VARIANCE over an aperture underestimates its error. The
cube carries, per plane, the correlation coefficient of its voxels with their neighbours at
the offsets :data:`~spxdask.drizzle3d.accumulate.OFFSETS` (measured while accumulating: the WAVELENGTH
table's ``CORR_*`` columns). The variance of any weighted sum Σ c_o s_o of a plane's voxels is
then Σ c_o² V_o + 2 Σ_d Σ_o c_o c_{o+d} ρ_d sqrt(V_o V_{o+d}).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from ..photometry import PhotometryConfig, measure_image
from ..photometry.overlap import circle_weights
from ..spherex.l2 import L2File
from ..spherex.units import UJY_ARCSEC2_PER_MJY_SR
from .accumulate import OFFSETS, OutputGrid, neighbour_slices, unit_source_cubes
from .cube import DrizzleCube, correlation_columns
from .io import as_loaded, load_cube

#: Columns of :func:`extract_spectrum`, in order.
SPECTRUM_COLUMNS = ("wavelength", "flux", "flux_error", "n_images", "flag", "edge")
METHODS = ("aperture", "psf", "frames")


def extract_spectrum(cube: str | Path | dict | DrizzleCube, ra, dec, *, radius: float = 20.0,
                     annulus: tuple[float, float] = (30.0, 45.0), method: str = "aperture",
                     point_source: bool = True, photometry: PhotometryConfig | None = None,
                     neighbours: pd.DataFrame | None = None, shapes: pd.DataFrame | None = None,
                     storage_options: dict | None = None) -> pd.DataFrame:
    """The spectrum of the source at (ra, dec) in a cube: one row per plane.

    Parameters
    ----------
    cube : path, dict or DrizzleCube
        A cube file, a cube loaded by :func:`~spxdask.drizzle3d.load_cube`, or a cube object.
    ra, dec : float or 1-D arrays
        Source position(s) (deg). For arrays, the spectra of all the sources, one after the
        other, with a leading ``source`` column (the position's index); the cube is read and
        its WCS built once.
    radius : float
        Aperture radius (arcsec). The default, 20" (3.3 native pixels), holds all but ~0.1 %
        of a drizzled SPHEREx point source.
    annulus : (float, float)
        Inner and outer background radii (arcsec); the background is the mean of the annulus
        voxels within 3 sigma of their median (sigma from VARIANCE).
    method : {"aperture", "psf", "frames"}
        ``"aperture"``: an exact circular aperture on the cube's voxels. ``"psf"``: the
        aperture's voxels weighted by the point source drizzled at (ra, dec) through the cube's
        input frames (see ``point_source``; the per-plane effective PSF of the cube there), the
        background from the same annulus: less noise than the aperture where the sky dominates.
        ``"frames"``: the
        source measured on each of the cube's input frames (its ``INPUTS``) by the batch
        pipeline's forced photometry, the fluxes (``flux_model``) binned onto the cube's planes
        by their wavelength (inverse-variance mean): the honest point-source spectrum, free of
        the resampling's covariances (as jwst's maintainers advise).
    point_source : bool
        ``"aperture"``: divide each plane's flux and error by the flux a 1 µJy point source at
        (ra, dec), drizzled through the same frames, pixels, masks and weights (the frames'
        PSF), gives in the same aperture and annulus. A droplet smaller than the pixel
        (``xy_shrink`` < 1) renders an undersampled source unevenly, a different error in each
        plane (0.5 % rms at 0.8 with 8 frames; 1.5 % at 0.5): the division takes it out, so the
        errors hold at high S/N. It reads the cube's input frames (its ``INPUTS``); a cube
        without them is measured as it is, with a warning. For extended sources give their
        ``shapes``; False: the aperture's flux as it is.
    photometry : PhotometryConfig, optional
        How ``"frames"`` measures (default: :class:`~spxdask.PhotometryConfig`).
    neighbours : DataFrame, optional
        ``"frames"``: more sources (ra, dec, and any motion or shape columns) fitted with the
        target in each frame.
    shapes : DataFrame, optional
        The sources' Tractor shapes, one row per position (``type``, ``shape_r``,
        ``shape_e1``, ``shape_e2``, ``sersic``, as the photometry's catalogs carry them): the
        galaxies among them are drizzled with their profile for the division
        (``point_source``, ``"psf"``), so that ``flux`` is a galaxy's total, the light beyond
        the aperture included, with errors that hold at high S/N; rows of type ``PSF`` are
        point sources. ``"frames"`` fits each with its profile.
    storage_options : dict, optional
        fsspec options for remote input frames (``"frames"``, ``point_source``).

    Returns
    -------
    DataFrame
        :data:`SPECTRUM_COLUMNS`: ``wavelength`` (µm, plane centre), ``flux`` and
        ``flux_error`` (µJy), ``n_images`` (images contributing to the voxel at the source
        position), ``flag`` (aperture voxels masked or not covered; their light is missing
        from ``flux``) and ``edge`` (a frame's band edge, spatial edge or mask crosses the
        aperture: its voxels are not all fed by the same number of images; the point-source
        division accounts for it). A plane with no covered aperture voxel has NaN flux. With
        ``"frames"``: ``n_images`` the frame measurements binned into the plane, ``flag``
        those with a ``psf_quality`` reason, ``edge`` False.

    Raises
    ------
    ValueError
        For a position outside the cube (naming it), or bad radii / method.
    """
    if method not in METHODS:
        raise ValueError(f"extract_spectrum: method must be one of {METHODS}, got {method!r}")
    if shapes is not None and len(shapes) != np.size(ra):
        raise ValueError(f"extract_spectrum: shapes has {len(shapes)} rows for {np.size(ra)} position(s)")
    if isinstance(cube, (str, Path)):
        cube = load_cube(cube)
    if method == "frames":
        return _from_frames(_with_inputs(cube, method), ra, dec, photometry or PhotometryConfig(), neighbours, shapes,
                            storage_options)
    r_in, r_out = annulus
    if not 0 < radius <= r_in < r_out:
        raise ValueError(f"extract_spectrum: need 0 < radius <= annulus[0] < annulus[1], got {radius}, {annulus}")
    data = _loaded(cube)
    wcs = WCS(data["sci_header"]).celestial
    rho = _correlation(data, data["sci"].shape[0])
    ras, decs = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    boxes = [_cutout(data, wcs, r, d, r_out) for r, d in zip(ras, decs)]
    if method == "psf":
        units = _unit_cutouts(_with_inputs(cube, method), wcs, ras, decs, boxes, shapes, storage_options)
    else:
        units = (_unit_cutouts(cube, wcs, ras, decs, boxes, shapes, storage_options) if point_source
                 else [None] * len(boxes))
    spectra = [_spectrum(data, rho, box, radius, annulus, unit, weighted=method == "psf")
               for box, unit in zip(boxes, units)]
    if np.ndim(ra) == 0:
        return spectra[0]
    return pd.concat([one.assign(source=k) for k, one in enumerate(spectra)],
                     ignore_index=True).reindex(columns=["source", *SPECTRUM_COLUMNS])


class _Cutout(NamedTuple):
    """A source's place in the cube: its pixel position and the box holding its annulus."""

    x: float
    y: float
    rows: slice
    cols: slice


def _cutout(data: dict, wcs: WCS, ra: float, dec: float, r_out: float) -> _Cutout:
    scale = float(data["header"]["EPIXSCLE"])  # arcsec per output pixel
    x, y = (float(v) for v in wcs.all_world2pix([[ra, dec]], 0)[0])
    _, ny, nx = data["sci"].shape
    if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
        raise ValueError(f"extract_spectrum: ({ra}, {dec}) is outside the cube (pixel {x:.1f}, {y:.1f} of {nx} x {ny})")
    m = int(math.ceil(r_out / scale)) + 1
    ix, iy = int(round(x)), int(round(y))
    return _Cutout(x, y, slice(max(iy - m, 0), min(iy + m + 1, ny)), slice(max(ix - m, 0), min(ix + m + 1, nx)))


def _unit_cutouts(cube: dict | DrizzleCube, wcs: WCS, ras: np.ndarray, decs: np.ndarray, boxes: list[_Cutout],
                  shapes: pd.DataFrame | None, storage_options: dict | None) -> list[np.ndarray | None]:
    """Each source's cut-out of the cube a 1 µJy source at its position (a point, or its
    ``shapes`` profile) makes, drizzled through the cube's input frames (read once each), or
    None for each when the cube does not name them (with a warning)."""
    if not isinstance(cube, DrizzleCube) or not cube.inputs:
        warnings.warn("extract_spectrum: the cube does not name its input frames (no INPUTS table): the drizzle's "
                      "rendering of a point source is not divided out, and errors are too small beyond S/N ~ 100",
                      stacklevel=3)
        return [None] * len(boxes)
    n_z = cube.zgrid.n_z
    flux = [np.zeros((n_z, b.rows.stop - b.rows.start, b.cols.stop - b.cols.start)) for b in boxes]
    weight = [np.zeros_like(f) for f in flux]
    grids: list[OutputGrid] = []
    for b in boxes:
        sub = wcs.deepcopy()
        sub.wcs.crpix = sub.wcs.crpix - [b.cols.start, b.rows.start]
        grids.append(OutputGrid(sub, flux[len(grids)].shape[1:], cube.zgrid, cube.detector))
    whole = OutputGrid(wcs, cube.flux_weighted.shape[1:], cube.zgrid, cube.detector)
    for frame in cube.inputs:
        with L2File(frame.file, storage_options=storage_options) as l2:
            for k, part in enumerate(unit_source_cubes(l2, whole, cube.config, grids, ras, decs, shapes=shapes)):
                for plane in part.planes():
                    flux[k][plane.z, plane.rows, plane.cols] += plane.of(part.flux)
                    weight[k][plane.z, plane.rows, plane.cols] += plane.of(part.weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [np.where(w > 0, f / w, 0.0) for f, w in zip(flux, weight)]


def _spectrum(data: dict, rho: np.ndarray, box: _Cutout, radius: float, annulus: tuple[float, float],
              unit: np.ndarray | None, *, weighted: bool = False) -> pd.DataFrame:
    """One source's spectrum (see :func:`extract_spectrum`); ``unit``: the cut-out of a 1 µJy
    point source drizzled at its place, whose flux in the same aperture divides the source's;
    ``weighted``: the aperture's voxels weighted by it (PSF-weighted extraction)."""
    r_in, r_out = annulus
    scale = float(data["header"]["EPIXSCLE"])  # arcsec per output pixel
    omega = scale**2 * UJY_ARCSEC2_PER_MJY_SR  # µJy per MJy/sr of a voxel
    x, y, rows, cols = box
    ix, iy = int(round(x)), int(round(y))
    sci, var, count = data["sci"], data["variance"], data["count"]
    s = sci[:, rows, cols].astype(float)
    v = var[:, rows, cols].astype(float)
    covered = np.isfinite(s) & np.isfinite(v) & (v > 0)
    yy, xx = np.mgrid[rows, cols]
    # exact aperture overlaps, placed in the cut-out
    ma = int(math.ceil(radius / scale))
    w = circle_weights(np.array([x - ix]), np.array([y - iy]), radius / scale, ma)[0]
    aperture = np.zeros(s.shape[1:])
    ay, ax = np.mgrid[iy - ma:iy + ma + 1, ix - ma:ix + ma + 1]
    inside = (ay >= rows.start) & (ay < rows.stop) & (ax >= cols.start) & (ax < cols.stop)
    aperture[ay[inside] - rows.start, ax[inside] - cols.start] = w[inside]
    beyond = int(np.count_nonzero((w > 0) & ~inside))  # aperture voxels beyond the cube's edge
    if weighted and unit is not None:  # normalised so that a point source of 1 µJy gives ~1
        profile = aperture * unit
        with np.errstate(invalid="ignore", divide="ignore"):
            profile = np.nan_to_num(profile / (omega * np.einsum("zyx,zyx->z", profile, unit))[:, None, None])
        a = np.where(covered, profile, 0.0)
    else:
        a = np.where(covered, aperture, 0.0)
    flag = ((aperture > 0) & ~covered).sum(axis=(1, 2)) + beyond
    # a frame's band edge (or its spatial edge, or a mask) crosses the aperture: its voxels are
    # not all fed by the same number of images
    reached = (aperture > 0)[None] & covered
    fed = count[:, rows, cols]
    edge = reached.any(axis=(1, 2)) & (np.where(reached, fed, 0).max(axis=(1, 2))
                                       != np.where(reached, fed, np.iinfo(np.int32).max).min(axis=(1, 2)))
    # background: annulus voxels within 3 sigma of their median, averaged
    d2 = ((xx - x) ** 2 + (yy - y) ** 2) * scale**2
    ring = covered & (d2 >= r_in**2) & (d2 < r_out**2)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # planes with an empty annulus
        median = np.nanmedian(np.where(ring, s, np.nan), axis=(1, 2))
    ring &= np.abs(s - median[:, None, None]) <= 3 * np.sqrt(v)
    n_ring = ring.sum(axis=(1, 2))
    u = np.where(ring, 1.0, 0.0) / np.maximum(n_ring, 1)[:, None, None]
    coeff = a - a.sum(axis=(1, 2))[:, None, None] * u  # flux = Ω Σ coeff · sci
    values = np.where(covered, s, 0.0)
    flux = omega * np.einsum("zyx,zyx->z", coeff, values)
    error = omega * np.sqrt(correlated_variance(coeff, np.where(covered, v, 0.0), rho))
    empty = (a.sum(axis=(1, 2)) == 0) | (n_ring == 0)
    if unit is not None:  # the drizzle's rendering of a point source there, divided out
        recovered = omega * np.einsum("zyx,zyx->z", coeff, unit)
        empty |= ~(recovered > 0.5)  # a source mostly outside the frames' good pixels
        with np.errstate(invalid="ignore", divide="ignore"):
            flux, error = flux / recovered, error / recovered
    flux[empty] = np.nan
    error[empty] = np.nan
    wl = np.asarray(data["wavelength"]["LAMBDA"], float)
    return pd.DataFrame({"wavelength": wl, "flux": flux, "flux_error": error,
                         "n_images": count[:, iy, ix].astype(np.int32), "flag": flag.astype(np.int32),
                         "edge": edge},
                        columns=list(SPECTRUM_COLUMNS))


def _with_inputs(cube: dict | DrizzleCube, method: str) -> DrizzleCube:
    """The cube, when it names the input frames ``method`` reads."""
    if not isinstance(cube, DrizzleCube) or not cube.inputs:
        raise ValueError(f"extract_spectrum(method={method!r}) needs a cube that names its input frames (a cube file "
                         "with an INPUTS table, or a DrizzleCube made by spxdask)")
    return cube


def _from_frames(cube: DrizzleCube, ra, dec, config: PhotometryConfig, neighbours: pd.DataFrame | None,
                 shapes: pd.DataFrame | None, storage_options: dict | None) -> pd.DataFrame:
    """The spectra of the sources at (ra, dec) from the cube's input frames (see
    :func:`extract_spectrum`): every source measured in one pass per frame."""
    many = np.ndim(ra) > 0
    targets = pd.DataFrame({"targetid": np.arange(np.size(ra)), "ra": np.atleast_1d(np.asarray(ra, float)),
                            "dec": np.atleast_1d(np.asarray(dec, float))})
    if shapes is not None:  # each fitted with its profile
        targets = targets.join(shapes.reset_index(drop=True).drop(columns=["targetid", "ra", "dec"], errors="ignore"))
    rows = []
    for frame in cube.inputs:
        with L2File(frame.file, storage_options=storage_options) as l2:
            rows.append(measure_image(l2, targets, config, neighbours=neighbours))
    measured = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["targetid"])
    edges = cube.zgrid.edges
    spectra = []
    for k in range(len(targets)):
        mine = measured[(measured["targetid"] == k) & np.isfinite(measured["flux_model_error"])
                        & (measured["flux_model_error"] > 0)]
        plane = np.searchsorted(edges, mine["wavelength"].to_numpy(float), side="right") - 1
        keep = (plane >= 0) & (plane < cube.zgrid.n_z)
        plane, mine = plane[keep], mine[keep]
        w = 1.0 / mine["flux_model_error"].to_numpy(float) ** 2
        sw = np.bincount(plane, w, minlength=cube.zgrid.n_z)
        swf = np.bincount(plane, w * mine["flux_model"].to_numpy(float), minlength=cube.zgrid.n_z)
        flagged = (mine["psf_quality"].fillna("") != "").to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            spectra.append(pd.DataFrame({
                "wavelength": cube.zgrid.centers, "flux": np.where(sw > 0, swf / sw, np.nan),
                "flux_error": np.where(sw > 0, 1 / np.sqrt(sw), np.nan),
                "n_images": np.bincount(plane, minlength=cube.zgrid.n_z).astype(np.int32),
                "flag": np.bincount(plane, flagged.astype(float), minlength=cube.zgrid.n_z).astype(np.int32),
                "edge": np.zeros(cube.zgrid.n_z, bool),
            }, columns=list(SPECTRUM_COLUMNS)).assign(**({"source": k} if many else {})))
    out = pd.concat(spectra, ignore_index=True)
    return out.reindex(columns=["source", *SPECTRUM_COLUMNS]) if many else out


def correlated_variance(coeff: np.ndarray, variance: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Variance of Σ c_o s_o per plane, for voxel values s of variances ``variance`` (nz, h, w)
    correlated with their neighbours at :data:`OFFSETS` by ``rho`` (nz, len(OFFSETS))."""
    sd = np.sqrt(variance)
    total = np.einsum("zyx,zyx->z", coeff**2, variance)
    h, w = coeff.shape[1:]
    for k, (dy, dx) in enumerate(OFFSETS):
        (ra, ca), (rb, cb) = neighbour_slices(dy, dx, h, w)
        a, b = (slice(None), ra, ca), (slice(None), rb, cb)
        total += 2 * rho[:, k] * np.einsum("zyx,zyx->z", coeff[a] * sd[a], coeff[b] * sd[b])
    return total


def _loaded(cube: str | Path | dict | DrizzleCube) -> dict:
    if isinstance(cube, (str, Path)):
        cube = load_cube(cube)
    return as_loaded(cube) if isinstance(cube, DrizzleCube) else cube


def _correlation(data: dict, n_z: int) -> np.ndarray:
    """The cube's per-plane correlation model (nz, len(OFFSETS)); zeros, with a warning, for a
    cube written without one."""
    table = data["wavelength"]
    names = correlation_columns()
    if not all(n in table.dtype.names for n in names):
        warnings.warn("the cube has no noise-correlation model (CORR_* columns): errors assume independent "
                      "voxels and are too small", stacklevel=3)
        return np.zeros((n_z, len(names)))
    return np.nan_to_num(np.column_stack([np.asarray(table[n], float) for n in names]))
