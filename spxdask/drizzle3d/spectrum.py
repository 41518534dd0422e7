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

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from ..photometry import PhotometryConfig, measure_image
from ..photometry.overlap import circle_weights
from ..spherex.l2 import L2File
from ..spherex.units import UJY_ARCSEC2_PER_MJY_SR
from .accumulate import OFFSETS, neighbour_slices
from .cube import DrizzleCube, correlation_columns
from .io import as_loaded, load_cube

#: Columns of :func:`extract_spectrum`, in order.
SPECTRUM_COLUMNS = ("wavelength", "flux", "flux_error", "n_images", "flag")
METHODS = ("aperture", "frames")


def extract_spectrum(cube: str | Path | dict | DrizzleCube, ra, dec, *, radius: float = 20.0,
                     annulus: tuple[float, float] = (30.0, 45.0), method: str = "aperture",
                     photometry: PhotometryConfig | None = None, neighbours: pd.DataFrame | None = None,
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
    method : {"aperture", "frames"}
        ``"aperture"``: an exact circular aperture on the cube's voxels. ``"frames"``: the
        source measured on each of the cube's input frames (its ``INPUTS``) by the batch
        pipeline's forced photometry, the fluxes (``flux_model``) binned onto the cube's planes
        by their wavelength (inverse-variance mean): the honest point-source spectrum, free of
        the resampling's covariances (as jwst's maintainers advise).
    photometry : PhotometryConfig, optional
        How ``"frames"`` measures (default: :class:`~spxdask.PhotometryConfig`).
    neighbours : DataFrame, optional
        ``"frames"``: more sources (ra, dec, and any motion or shape columns) fitted with the
        target in each frame.
    storage_options : dict, optional
        ``"frames"``: fsspec options for remote input frames.

    Returns
    -------
    DataFrame
        :data:`SPECTRUM_COLUMNS`: ``wavelength`` (µm, plane centre), ``flux`` and
        ``flux_error`` (µJy), ``n_images`` (images contributing to the voxel at the source
        position) and ``flag`` (aperture voxels masked or not covered; their light is missing
        from ``flux``). A plane with no covered aperture voxel has NaN flux. With
        ``"frames"``: ``n_images`` the frame measurements binned into the plane, ``flag``
        those with a ``psf_quality`` reason.

    Raises
    ------
    ValueError
        For a position outside the cube (naming it), or bad radii / method.
    """
    if method not in METHODS:
        raise ValueError(f"extract_spectrum: method must be one of {METHODS}, got {method!r}")
    if method == "frames":
        return _from_frames(_with_inputs(cube), ra, dec, photometry or PhotometryConfig(), neighbours, storage_options)
    r_in, r_out = annulus
    if not 0 < radius <= r_in < r_out:
        raise ValueError(f"extract_spectrum: need 0 < radius <= annulus[0] < annulus[1], got {radius}, {annulus}")
    data = _loaded(cube)
    wcs = WCS(data["sci_header"]).celestial
    rho = _correlation(data, data["sci"].shape[0])
    if np.ndim(ra) == 0:
        return _spectrum(data, wcs, rho, float(ra), float(dec), radius, annulus)
    spectra = [_spectrum(data, wcs, rho, float(r), float(d), radius, annulus).assign(source=k)
               for k, (r, d) in enumerate(zip(np.asarray(ra, float), np.asarray(dec, float)))]
    return pd.concat(spectra, ignore_index=True).reindex(columns=["source", *SPECTRUM_COLUMNS])


def _spectrum(data: dict, wcs: WCS, rho: np.ndarray, ra: float, dec: float, radius: float,
              annulus: tuple[float, float]) -> pd.DataFrame:
    """One source's spectrum (see :func:`extract_spectrum`)."""
    r_in, r_out = annulus
    scale = float(data["header"]["EPIXSCLE"])  # arcsec per output pixel
    x, y = (float(v) for v in wcs.all_world2pix([[ra, dec]], 0)[0])
    sci, var, count = data["sci"], data["variance"], data["count"]
    n_z, ny, nx = sci.shape
    if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
        raise ValueError(f"extract_spectrum: ({ra}, {dec}) is outside the cube (pixel {x:.1f}, {y:.1f} of {nx} x {ny})")
    # the cut-out holding the annulus
    m = int(math.ceil(r_out / scale)) + 1
    ix, iy = int(round(x)), int(round(y))
    rows = slice(max(iy - m, 0), min(iy + m + 1, ny))
    cols = slice(max(ix - m, 0), min(ix + m + 1, nx))
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
    a = np.where(covered, aperture, 0.0)
    flag = ((aperture > 0) & ~covered).sum(axis=(1, 2)) + beyond
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
    omega = scale**2 * UJY_ARCSEC2_PER_MJY_SR
    values = np.where(covered, s, 0.0)
    flux = omega * np.einsum("zyx,zyx->z", coeff, values)
    error = omega * np.sqrt(correlated_variance(coeff, np.where(covered, v, 0.0), rho))
    empty = (a.sum(axis=(1, 2)) == 0) | (n_ring == 0)
    flux[empty] = np.nan
    error[empty] = np.nan
    wl = np.asarray(data["wavelength"]["LAMBDA"], float)
    return pd.DataFrame({"wavelength": wl, "flux": flux, "flux_error": error,
                         "n_images": count[:, iy, ix].astype(np.int32), "flag": flag.astype(np.int32)},
                        columns=list(SPECTRUM_COLUMNS))


def _with_inputs(cube: str | Path | dict | DrizzleCube) -> DrizzleCube:
    """The cube with its input frames (read from its file when given a path)."""
    if isinstance(cube, (str, Path)):
        cube = load_cube(cube)
    if not isinstance(cube, DrizzleCube) or not cube.inputs:
        raise ValueError("extract_spectrum(method='frames') needs a cube that names its input frames (a cube file "
                         "with an INPUTS table, or a DrizzleCube made by spxdask)")
    return cube


def _from_frames(cube: DrizzleCube, ra, dec, config: PhotometryConfig, neighbours: pd.DataFrame | None,
                 storage_options: dict | None) -> pd.DataFrame:
    """The spectra of the sources at (ra, dec) from the cube's input frames (see
    :func:`extract_spectrum`): every source measured in one pass per frame."""
    many = np.ndim(ra) > 0
    targets = pd.DataFrame({"targetid": np.arange(np.size(ra)), "ra": np.atleast_1d(np.asarray(ra, float)),
                            "dec": np.atleast_1d(np.asarray(dec, float))})
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
