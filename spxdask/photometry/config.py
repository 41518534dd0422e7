"""Photometry configuration (the reference package's ``PhotometryConfig``, every field honoured)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

from .._config import Config, require
from ..compat import check_config
from ..spherex.flags import REFERENCE_BAD_BITS, mask_from_bits

APERTURE_METHODS = ("fixed", "fwhm")
BACKGROUND_METHODS = ("annulus", "window")
PIXEL_AREAS = ("wcs", "local")
PSF_BACKGROUNDS = ("fit", "local")
ASTROMETRY = ("apply", "measure", "none")


@dataclass
class PhotometryConfig(Config):
    """Forced aperture photometry parameters.

    Field names and defaults are those of spxquery 0.4.1's ``PhotometryConfig``; spxdask
    honours all of them (the reference batch path ignored several). Added fields:
    ``pixel_area`` and the ``psf_*`` fields of the joint PSF fit.

    Parameters
    ----------
    aperture_method : {"fwhm", "fixed"}
        ``"fwhm"``: radius = PSF_FWHM / pixel scale x ``fwhm_multiplier`` / 2;
        ``"fixed"``: radius = ``aperture_diameter`` / 2 (pixels).
    aperture_diameter, fwhm_multiplier : float
        See ``aperture_method``.
    max_processing_workers : int
        Kept for compatibility (the reference's single-source pool size); unused here.
    bad_flags : list of int
        FLAGS bit numbers whose pixels are never used (aperture or background).
    annulus_inner_offset : float
        Gap (px) between the aperture edge and the background annulus.
    min_annulus_area : float
        The annulus starts with at least this area (px^2).
    max_outer_radius : float
        Largest annulus outer radius (px) while growing it.
    min_usable_pixels : int
        Fewest usable background pixels; below it the annulus grows (``max_annulus_attempts``
        steps of ``annulus_expansion_step`` px), then SOURCE pixels are admitted, then the
        source is reported with ``quality`` "no_background".
    bg_sigma_clip_sigma, bg_sigma_clip_maxiters : float, int
        Sigma clipping of background pixels (mean / population std iterations).
    subtract_zodi : bool
        Subtract the file's ZODI model, scaled by a weighted least-squares fit over background
        pixels clipped to [``zodi_scale_min``, ``zodi_scale_max``].
    zodi_scale_min, zodi_scale_max : float
        Bounds of the fitted ZODI scale.
    pixel_scale_fallback : float
        Pixel scale (arcsec) when the WCS gives none.
    max_annulus_attempts : int
        Times the annulus grows.
    annulus_expansion_step : float
        How much its outer radius grows each time (px).
    background_method : {"annulus", "window"}
        Local annulus, or a ``window_size`` box as the reference batch path.
    window_size : int or (int, int)
        Side, or (height, width), of the background box of ``background_method="window"`` (px).
    pixel_area : {"wcs", "local"}
        µJy per (MJy/sr x pixel): ``"wcs"`` uses the square of the linear WCS pixel scale (the
        reference); ``"local"`` the solid angle of the source's pixel through the SIP WCS. The
        PSF-fit flux always uses the latter.
    psf_fit : bool
        Also measure every source by a joint PSF fit of all sources in the image (the
        ``flux_psf`` columns); ``False`` for aperture photometry only.
    psf_fit_radius : float
        Pixels within this radius (px) of any source enter the PSF fit; each source's PSF
        model extends over the (2m+1)² box around it, m = ceil(radius).
    psf_background : {"fit", "local"}
        ``"fit"``: one background level per ``psf_background_tile`` square of pixels, fitted
        jointly with the fluxes; ``"local"``: each source's local background of the aperture
        measurement (biased by its neighbours' light in crowded fields).
    psf_background_tile : int
        Side (px) of the background tiles of ``psf_background="fit"``.
    catalog_epoch : float, optional
        Julian year of the catalog positions of rows without a ``ref_epoch`` (Gaia DR3:
        2016.0). Sources with proper motions (``pmra``, ``pmdec``, ``parallax``) are measured
        where they are at each image's mid-exposure (:mod:`.motion`).
    astrometry : {"apply", "measure", "none"}
        Each image measures the shift between the catalog and its bright isolated sources
        (:mod:`.astrometry`) and records it; ``"apply"`` also moves every source by it when it
        is significant and the stars agree on it.
    astrometry_max_rms : float
        The stars' scatter about the shift (arcsec) above which an image's astrometry is not
        trusted (recorded, not applied).
    epsf_calibration : str, optional
        A folder of IRSA's ePSF calibration files (``epsf_D<n>_*.fits``): images whose files
        carry the QR2 optical-PSF cube are measured with their detector's effective PSF from
        it instead (:mod:`spxdask.spherex.calibration`); QR3 files keep their own ePSF.
    """

    aperture_method: str = "fwhm"
    aperture_diameter: float = 3.0
    fwhm_multiplier: float = 2.5
    max_processing_workers: int = 10
    bad_flags: list[int] = field(default_factory=lambda: list(REFERENCE_BAD_BITS))
    annulus_inner_offset: float = 1.414
    min_annulus_area: float = 10
    max_outer_radius: float = 5.0
    min_usable_pixels: int = 10
    bg_sigma_clip_sigma: float = 3.0
    bg_sigma_clip_maxiters: int = 3
    subtract_zodi: bool = True
    zodi_scale_min: float = 0.0
    zodi_scale_max: float = 10.0
    pixel_scale_fallback: float = 6.2
    max_annulus_attempts: int = 5
    annulus_expansion_step: float = 0.5
    background_method: str = "annulus"
    window_size: int | tuple[int, int] = 50
    pixel_area: str = "wcs"
    psf_fit: bool = True
    psf_fit_radius: float = 3.0
    psf_background: str = "fit"
    psf_background_tile: int = 64
    catalog_epoch: float | None = None
    astrometry: str = "apply"
    astrometry_max_rms: float = 1.0
    epsf_calibration: str | None = None

    drop_unknown: ClassVar[bool] = True  # the reference's from_dict drops unknown keys

    def __post_init__(self) -> None:
        check_config(self)
        need = functools.partial(require, self)
        need(self.aperture_method in APERTURE_METHODS, "aperture_method", f"must be one of {APERTURE_METHODS}")
        need(self.background_method in BACKGROUND_METHODS, "background_method", f"must be one of {BACKGROUND_METHODS}")
        need(self.pixel_area in PIXEL_AREAS, "pixel_area", f"must be one of {PIXEL_AREAS}")
        need(isinstance(self.psf_fit, bool), "psf_fit", "must be True or False")
        need(self.psf_background in PSF_BACKGROUNDS, "psf_background", f"must be one of {PSF_BACKGROUNDS}")
        need(0.5 <= float(self.psf_fit_radius) <= 10, "psf_fit_radius", "must be within 0.5 .. 10 pixels")
        need(self.astrometry in ASTROMETRY, "astrometry", f"must be one of {ASTROMETRY}")
        if self.epsf_calibration is not None:
            self.epsf_calibration = str(self.epsf_calibration)
        need(self.catalog_epoch is None or 1900 <= float(self.catalog_epoch) <= 2100, "catalog_epoch",
             "must be a Julian year (e.g. 2016.0) or None")
        for name in ("aperture_diameter", "astrometry_max_rms", "fwhm_multiplier", "min_annulus_area", "max_outer_radius",
                     "bg_sigma_clip_sigma", "pixel_scale_fallback", "annulus_expansion_step"):
            need(float(getattr(self, name)) > 0, name, "must be > 0")
        for name in ("max_processing_workers", "min_usable_pixels", "bg_sigma_clip_maxiters", "max_annulus_attempts",
                     "psf_background_tile"):
            need(int(getattr(self, name)) == getattr(self, name) and getattr(self, name) > 0, name, "must be a positive integer")
        need(self.annulus_inner_offset >= 0, "annulus_inner_offset", "must be >= 0")
        need(self.zodi_scale_max >= self.zodi_scale_min, "zodi_scale_max", "must be >= zodi_scale_min")
        win = (self.window_size,) * 2 if isinstance(self.window_size, int) else tuple(self.window_size)
        need(len(win) == 2 and all(int(w) == w and w > 0 for w in win), "window_size", "must be a positive int or (h, w)")
        try:
            mask_from_bits(self.bad_flags)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"PhotometryConfig.bad_flags must be bit numbers 0..31, got {self.bad_flags!r}") from exc

    @property
    def bad_mask(self) -> int:
        """The ``bad_flags`` bits as one integer mask."""
        return mask_from_bits(self.bad_flags)

    @property
    def window_shape(self) -> tuple[int, int]:
        """``window_size`` as (h, w)."""
        w = self.window_size
        return (int(w), int(w)) if isinstance(w, int) else (int(w[0]), int(w[1]))
