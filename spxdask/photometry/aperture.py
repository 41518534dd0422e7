"""Forced photometry of all catalog sources in one SPHEREx L2 image, at once: aperture and
joint PSF fit.

numpy / astropy and the compiled loops of :mod:`.pixels` and :mod:`.psf_fit`: no Dask, no
Python loop over sources. Steps:

1. sky → pixel through the file's SIP WCS for the image's own sources;
2. zodi: the ZODI model scaled by a weighted least-squares fit over background pixels;
3. per source, in one compiled pass (:mod:`.pixels`): the background (annulus or window,
   sigma-clipped, :mod:`.background`) and the aperture sums with exact circle/pixel overlap
   weights (:mod:`.overlap`, equal to photutils' ``method="exact"``);
4. aperture correction from the file's own PSF at each source's sub-pixel position, with the
   same weights and masked pixels, so ``flux_total`` also recovers light lost to masked pixels;
5. the joint PSF fit of the sources and their neighbours (:mod:`.psf_fit`), with the same
   PSF stamps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.spatial import cKDTree

from .. import per_image
from ..spherex.calibration import calibration_epsf
from ..spherex.flags import Flag
from ..spherex.l2 import L2File, L2FormatError
from ..spherex.psf import FilePSF
from ..spherex.units import UJY_ARCSEC2_PER_MJY_SR, ab_magnitude
from .astrometry import MAX_SHIFT_PX, Astrometry, combine, measure_shift
from .background import background_regions, fit_zodi_scale, zodi_row_step
from .config import PhotometryConfig
from .galaxy import POINT_TYPES, galaxy_stamps, local_jacobian, models, shape_parameters, tractor_types
from .motion import positions_at
from .pixels import measure_pixels
from .psf_fit import DEGENERATE_CORRELATION, fit_models

#: Output columns of :func:`measure_image`, in order: the per-image file's (:mod:`spxdask.per_image`).
COLUMNS = per_image.NAMES
#: The reasons ``quality`` can list (comma-separated), see :func:`measure_image`.
QUALITY_REASONS = ("edge", "bad_pixels", "background_source_pixels", "no_background")
#: The reasons ``psf_quality`` can list.
PSF_QUALITY_REASONS = ("edge", "bad_pixels", "psf_degenerate", "no_pixels")
#: A neighbour within this distance (arcsec) of a target is the target itself.
SAME_SOURCE_ARCSEC = 0.5
#: Sources are measured in bands of this many image rows.
ROW_BAND = 16
#: Key of :func:`measure_image`'s result's ``attrs`` holding the image's :class:`.Astrometry`.
ASTROMETRY_ATTR = "astrometry"


def aperture_radius(l2: L2File, config: PhotometryConfig) -> float:
    """Aperture radius in pixels for this image."""
    if config.aperture_method == "fixed":
        return config.aperture_diameter / 2
    fwhm = l2.meta.psf_fwhm if np.isfinite(l2.meta.psf_fwhm) else 6.0
    return fwhm / pixel_scale(l2, config) * config.fwhm_multiplier / 2


def pixel_scale(l2: L2File, config: PhotometryConfig) -> float:
    """Linear WCS pixel scale (arcsec), or ``config.pixel_scale_fallback``."""
    try:
        scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(l2.wcs))) * 3600)
    except Exception:
        return config.pixel_scale_fallback
    return scale if np.isfinite(scale) and scale > 0 else config.pixel_scale_fallback


def measure_image(l2: L2File, sources: pd.DataFrame, config: PhotometryConfig | None = None, *,
                  neighbours: pd.DataFrame | None = None) -> pd.DataFrame:
    """Forced photometry of ``sources`` (columns targetid, ra, dec) in one image.

    Sources with proper motions (columns pmra, pmdec, parallax, ref_epoch; :mod:`.motion`) are
    measured where they are at the image's MJD-AVG. With ``config.astrometry`` other than
    ``"none"`` the image's shift against its stars is measured (:mod:`.astrometry`) and, when
    it is significant and ``"apply"`` is asked, every source is moved by it.

    Parameters
    ----------
    l2 : L2File
    sources : DataFrame
        The targets: one row each in the result when inside the image; a ``type`` column
        (Tractor's) keeps all but ``PSF`` sources out of the astrometry.
    config : PhotometryConfig, optional
    neighbours : DataFrame, optional
        More sources (columns ra, dec; e.g. a deeper survey catalog) that enter the joint PSF
        fit but get no row. One within 0.5" of a target is that target, fitted once.

    Returns
    -------
    DataFrame
        One row per target whose position falls inside the image, in input order, with
        :data:`COLUMNS`; ``attrs["astrometry"]`` holds the image's
        :class:`~spxdask.photometry.astrometry.Astrometry` (None when not measured).
        Fluxes in µJy, background in µJy/arcsec², wavelengths in micron, mjd
        the mid-exposure MJD (MJD-BEG/END mean), ``pipeline_version`` the file's VERSION and
        ``release`` its layout ("qr2", "qr3": their calibrations differ). ``quality`` lists what went wrong for the
        aperture (comma-separated): ``edge`` (aperture crosses the image edge), ``bad_pixels``
        (masked pixels inside the aperture: ``flux`` misses them, ``flux_total`` corrects for
        them), ``background_source_pixels`` (SOURCE pixels admitted to the background),
        ``no_background`` (too few background pixels: fluxes are NaN). ``psf_quality`` the
        same for the PSF fit (over the fit radius): ``edge``, ``bad_pixels`` (left out of the
        fit), ``psf_degenerate`` (a neighbour the data cannot split from it: absolute correlation
        above 0.9; the error says how little is known), ``no_pixels`` (no usable pixel: NaN).
    """
    config = config or PhotometryConfig()
    meta = l2.meta
    ny, nx = l2.shape
    ra, dec = positions_at(sources, meta.mjd_avg, catalog_epoch=config.catalog_epoch)
    x, y = _pixels(l2, ra, dec)
    keep = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    # sources in bands of rows: neighbours in the list read neighbouring pixels (twice as fast
    # as catalog order for the compiled passes); the rows go back to input order at the end
    order = np.lexsort((x[keep], np.round(y[keep]) // ROW_BAND))
    rows = np.flatnonzero(keep)[order]
    x, y = x[rows], y[rows]
    if not keep.any():
        return per_image.empty_frame(sources["targetid"])

    r = aperture_radius(l2, config)
    m = max(1, int(math.ceil(r)))
    m_psf = int(math.ceil(config.psf_fit_radius)) if config.psf_fit else 0
    extra = _neighbour_pixels(l2, neighbours, x, y, config) if config.psf_fit else None
    # arrays as stored (memory-mapped for local files, the rows used for remote ones): only
    # the pixels used are read
    # a shift of the astrometry moves every box by up to MAX_SHIFT_PX
    reach = max(m, m_psf) + int(math.ceil(MAX_SHIFT_PX))
    used = _rows_used(l2.shape, x, y, r, reach, config, extra.y if extra is not None else np.empty(0))
    names = ["IMAGE", "FLAGS", "VARIANCE"] + (["ZODI"] if config.subtract_zodi else [])
    image, flags, variance, *zodi_hdu = l2.raw_rows(names, used)
    step = zodi_row_step(image.shape)
    if not np.isfinite(image[step // 2::step, ::step]).any() and not np.isfinite(image[used]).any():
        raise L2FormatError(l2.source, "IMAGE has no finite pixel where the sources are")
    bad_mask = config.bad_mask
    if config.subtract_zodi:
        zodi = zodi_hdu[0]
        zodi_scale = fit_zodi_scale(image, zodi, variance, flags, bad_mask | Flag.SOURCE,
                                    config.zodi_scale_min, config.zodi_scale_max)
    else:  # image - 0 x image keeps the image (and its non-finite pixels) as it is
        zodi, zodi_scale = image, 0.0

    psf = psf_of(l2, config)
    types = tractor_types(sources) if config.psf_fit else None  # read once: the fits' models and the astrometry's stars
    astrometry = None
    if types is not None and config.astrometry != "none":
        point = np.isin(types[rows], POINT_TYPES)  # no type column, or one of Tractor's point types
        astrometry = _astrometry(l2, psf, image, zodi, variance, flags, zodi_scale, x, y, point, extra, config)
        if astrometry.applied:
            sx, sy = astrometry.dx / pixel_scale(l2, config), astrometry.dy / pixel_scale(l2, config)
            x, y = x + sx, y + sy
            extra = extra.shifted(sx, sy) if extra is not None else None

    pix = measure_pixels(image, zodi, variance, flags, zodi_scale, x, y, r, m, config)
    bg, bg_err = pix.bg, pix.bg_error
    raw, raw_err = pix.flux, np.sqrt(pix.variance)
    # one set of PSF stamps serves the aperture correction (its central pixels) and the fit
    stamps = psf.stamps(*l2.parent_pixel(x, y), max(m, m_psf))
    centre = slice(stamps.shape[1] // 2 - m, stamps.shape[1] // 2 + m + 1)
    fraction = np.einsum("nab,nab->n", pix.weights, stamps[:, centre, centre])
    with np.errstate(divide="ignore"):
        correction = np.where(fraction > 0, 1.0 / fraction, np.nan)

    area = l2.pixel_area(x, y) if config.pixel_area == "local" else pixel_scale(l2, config) ** 2
    to_ujy = UJY_ARCSEC2_PER_MJY_SR * area
    flux = raw * to_ujy
    flux_err = np.sqrt(raw_err**2 + (bg_err * math.pi * r * r) ** 2) * to_ujy
    mag, mag_err = ab_magnitude(flux, flux_err)
    wl, bw = l2.wavelength(x, y)
    edge = (x - r < -0.5) | (x + r > nx - 0.5) | (y - r < -0.5) | (y + r > ny - 0.5)
    no_bg = ~np.isfinite(bg)
    quality = _reasons(edge=edge, bad_pixels=pix.n_bad > 0, background_source_pixels=pix.bg_used_source,
                       no_background=no_bg)
    columns = {
        "targetid": sources["targetid"].to_numpy()[rows],
        "ra": ra[rows], "dec": dec[rows],
        "obs_id": meta.obs_id, "band": meta.band, "mjd": meta.mjd,
        "x": x, "y": y,
        "flux": flux, "flux_error": flux_err, "mag_ab": mag, "mag_ab_error": mag_err,
        "wavelength": wl, "bandwidth": bw, "flag": pix.flag,
        "bg_level": bg * UJY_ARCSEC2_PER_MJY_SR, "bg_error": bg_err * UJY_ARCSEC2_PER_MJY_SR,
        "aperture_radius": r, "filename": meta.filename, "detector": np.int8(meta.detector),
        "n_bad": pix.n_bad, "aperture_correction": correction,
        "flux_total": flux * correction, "flux_total_error": flux_err * correction,
        "zodi_scale": zodi_scale, "quality": quality,
        "pipeline_version": meta.version, "release": meta.layout,
    }
    if config.psf_fit:
        # the PSF flux is new: always the pixel's own solid angle (SIP), whatever ``pixel_area``
        psf_to_ujy = to_ujy if config.pixel_area == "local" else UJY_ARCSEC2_PER_MJY_SR * l2.pixel_area(x, y)
        model = models(sources, types=types)[rows]
        fit = _psf_columns(l2, psf, image, zodi, variance, flags, zodi_scale, x, y, stamps, bg, model,
                           sources.iloc[rows].reset_index(drop=True), extra, config)
        for kind in ("psf", "model"):
            flux, error = fit[f"flux_{kind}"] * psf_to_ujy, fit[f"flux_{kind}_error"] * psf_to_ujy
            fit[f"flux_{kind}"], fit[f"flux_{kind}_error"] = flux, error
            fit[f"mag_{kind}_ab"], fit[f"mag_{kind}_ab_error"] = ab_magnitude(flux, error)
        columns.update(fit)
    else:  # not fitted: NaN fluxes, no quality
        columns.update(psf_n_neighbours=np.int32(0), psf_quality=None, model=None)
    # back to input order
    inverse = np.argsort(order)
    columns = {k: v[inverse] if isinstance(v, np.ndarray) and v.ndim == 1 else v for k, v in columns.items()}
    table = pd.DataFrame(columns).reindex(columns=list(COLUMNS))
    table.attrs[ASTROMETRY_ATTR] = astrometry
    return table


def _pixels(l2: L2File, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel positions of sky positions through the file's SIP WCS."""
    if not ra.size:
        return np.empty(0), np.empty(0)
    x, y = l2.wcs.all_world2pix(ra, dec, 0)
    return np.asarray(x, float), np.asarray(y, float)


class Neighbours(NamedTuple):
    """The neighbours fitted with an image's targets."""

    x: np.ndarray  # 0-based pixel positions
    y: np.ndarray
    nearest: np.ndarray  # index of each one's nearest target
    rows: pd.DataFrame  # their catalog rows (shapes)

    def shifted(self, dx: float, dy: float) -> Neighbours:
        """The same neighbours, their pixel positions moved by (dx, dy)."""
        return self._replace(x=self.x + dx, y=self.y + dy)


def _neighbour_pixels(l2: L2File, neighbours: pd.DataFrame | None, x: np.ndarray, y: np.ndarray,
                      config: PhotometryConfig) -> Neighbours | None:
    """The ``neighbours`` whose fit box meets the image and that are not one of the targets at
    (x, y), in bands of rows; None without any."""
    if neighbours is None or not len(neighbours):
        return None
    m = int(math.ceil(config.psf_fit_radius))
    nx_, ny_ = _pixels(l2, *positions_at(neighbours, l2.meta.mjd_avg, catalog_epoch=config.catalog_epoch))
    ny, nx = l2.shape
    near = (nx_ > -m - 0.5) & (nx_ < nx + m - 0.5) & (ny_ > -m - 0.5) & (ny_ < ny + m - 0.5)
    nx_, ny_ = nx_[near], ny_[near]
    dist, nearest = cKDTree(np.column_stack([x, y])).query(np.column_stack([nx_, ny_]))
    new = np.flatnonzero(dist > SAME_SOURCE_ARCSEC / pixel_scale(l2, config))
    new = new[np.lexsort((nx_[new], np.round(ny_[new]) // ROW_BAND))]
    if not new.size:
        return None
    return Neighbours(nx_[new], ny_[new], nearest[new], neighbours.iloc[np.flatnonzero(near)[new]])


def psf_of(l2: L2File, config: PhotometryConfig) -> FilePSF:
    """The PSF ``l2`` is measured with: its own, or for a file with the QR2 optical-PSF cube
    its detector's ePSF from ``config.epsf_calibration``.

    Parameters
    ----------
    l2 : L2File
    config : PhotometryConfig

    Returns
    -------
    FilePSF
    """
    if config.epsf_calibration is not None and l2.layout == "qr2":
        return calibration_epsf(config.epsf_calibration, l2.meta.detector)
    return l2.psf


def _astrometry(l2: L2File, psf: FilePSF, image: np.ndarray, zodi: np.ndarray, variance: np.ndarray, flags: np.ndarray,
                zodi_scale: float, x: np.ndarray, y: np.ndarray, point: np.ndarray,
                neighbours: Neighbours | None, config: PhotometryConfig) -> Astrometry:
    """The image's shift (:mod:`.astrometry`) from the targets at (x, y) that are ``point``
    sources, isolated from every target and neighbour."""
    if neighbours is not None:
        x, y = np.concatenate([x, neighbours.x]), np.concatenate([y, neighbours.y])
        point = np.concatenate([point, np.zeros(neighbours.x.size, bool)])
    offset, error, _ = measure_shift(image, zodi, variance, flags, zodi_scale, x, y,
                                     lambda u, v, half: psf.stamps(*l2.parent_pixel(u, v), half), candidates=point,
                                     m=max(2, int(math.ceil(config.psf_fit_radius))), bad_mask=config.bad_mask)
    return combine(offset, error, scale=pixel_scale(l2, config), max_rms=config.astrometry_max_rms,
                   apply=config.astrometry == "apply")


def _rows_used(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, r: float, reach: int,
               config: PhotometryConfig, more_y: np.ndarray) -> np.ndarray:
    """The image rows the kernel reads (bool per row): the background regions of the sources
    at (x, y), ``reach`` rows around them (aperture, PSF fit box) and around ``more_y`` (the
    neighbours' fit boxes), and the rows the zodi fit samples."""
    ny = shape[0]
    iy = np.round(np.concatenate([y, more_y])).astype(np.int64)
    boxes = background_regions(x, y, r, shape, config).boxes
    count = np.zeros(ny + 1, np.int64)
    np.add.at(count, np.concatenate([boxes[:, 0], np.clip(iy - reach, 0, ny)]), 1)
    np.add.at(count, np.concatenate([boxes[:, 1], np.clip(iy + reach + 1, 0, ny)]), -1)
    used = np.cumsum(count[:-1]) > 0
    step = zodi_row_step(shape)
    used[step // 2::step] = True
    return used


def _psf_columns(l2: L2File, psf: FilePSF, image: np.ndarray, zodi: np.ndarray, variance: np.ndarray, flags: np.ndarray,
                 zodi_scale: float, x: np.ndarray, y: np.ndarray, stamps: np.ndarray, bg: np.ndarray,
                 model: np.ndarray, shapes: pd.DataFrame, neighbours: Neighbours | None,
                 config: PhotometryConfig) -> dict[str, np.ndarray]:
    """The joint fits of the targets at (x, y) (their ``stamps``, local background ``bg``,
    ``model`` names and catalog rows ``shapes``) and of the ``neighbours``: every source a
    point (the PSF columns), then, when some are galaxies, each with its model (the model
    columns, else the PSF ones). The targets' columns, fluxes in image units x pixels."""
    n = x.size
    m = int(math.ceil(config.psf_fit_radius))
    centre = slice(stamps.shape[1] // 2 - m, stamps.shape[1] // 2 + m + 1)
    stamps = stamps[:, centre, centre]
    local_bg = bg
    if neighbours is not None:
        x, y = np.concatenate([x, neighbours.x]), np.concatenate([y, neighbours.y])
        stamps = np.concatenate([stamps, psf.stamps(*l2.parent_pixel(neighbours.x, neighbours.y), m)])
        # a neighbour's local background: that of the nearest target (only "local" uses it)
        local_bg = np.concatenate([bg, bg[neighbours.nearest]])
        model = np.concatenate([model, models(neighbours.rows)])
        shapes = pd.concat([shapes, neighbours.rows], ignore_index=True)

    extended = np.flatnonzero(model != "PSF")
    stamp_sets = [stamps]
    if extended.size:  # the same fit again, each galaxy with its profile
        n_sersic, r_e, q, theta = shape_parameters(shapes.iloc[extended], model[extended])
        modelled = stamps.copy()
        modelled[extended] = galaxy_stamps(psf, *l2.parent_pixel(x[extended], y[extended]),
                                           local_jacobian(l2.wcs, x[extended], y[extended]), n_sersic, r_e, q, theta, m)
        stamp_sets.append(modelled)
    point, *more = fit_models(image, zodi, variance, flags, zodi_scale, x, y, stamp_sets, radius=config.psf_fit_radius,
                              bad_mask=config.bad_mask, background=config.psf_background,
                              tile=config.psf_background_tile, local_background=local_bg)
    fitted = more[0] if more else point
    quality = _reasons(edge=point.edge[:n], bad_pixels=point.n_bad[:n] > 0,
                       psf_degenerate=point.corr_max[:n] > DEGENERATE_CORRELATION,
                       no_pixels=~np.isfinite(point.flux[:n]))
    return {"flux_psf": point.flux[:n], "flux_psf_error": np.sqrt(point.variance[:n]), "psf_chi2": point.chi2[:n],
            "psf_n_neighbours": point.n_neighbours[:n], "psf_corr_max": point.corr_max[:n], "psf_quality": quality,
            "flux_model": fitted.flux[:n], "flux_model_error": np.sqrt(fitted.variance[:n]), "model": model[:n]}


def _reasons(**conditions: np.ndarray) -> np.ndarray:
    """Comma-separated names of the conditions that hold, per row ("" when none)."""
    names = list(conditions)
    table = np.array([",".join(nm for b, nm in enumerate(names) if code >> b & 1) for code in range(2 ** len(names))],
                     dtype=object)
    codes = sum(np.asarray(hit, dtype=np.int64) << b for b, hit in enumerate(conditions.values()))
    return table[codes]
