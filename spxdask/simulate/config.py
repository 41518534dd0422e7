"""What to simulate: :class:`SimConfig`."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .._config import Config, require, valid_position
from ..spherex import channels
from ..spherex.format import PIXEL_SCALE_ARCSEC

SCALE_DEG = PIXEL_SCALE_ARCSEC / 3600.0
#: (processing tag, pipeline VERSION) the simulator writes for each release layout.
QR_VERSIONS = {"qr2": ("l2b-v21", "6.5.7"), "qr3": ("l2b-v27", "7.0.1")}
#: The pipeline VERSION of simulated files with the PSF erratum (``SimConfig.psf_erratum``).
ERRATUM_VERSION = "6.5.4"


@dataclass(frozen=True)
class SimConfig(Config):
    """What to simulate.

    Parameters
    ----------
    n_images : int
        L2 files; exposures have one file per detector in ``detectors``.
    size : int
        Image side (px); images smaller than the detector (2040) are cut-outs of it (IBE style).
    n_sources : int
        Sources drawn.
    seed : int
        Random seed: the same config writes the same files.
    layout : {"qr2", "qr3"}
        The release layout (PSF cube or ePSF table, their header keywords and VERSION).
    center : (float, float)
        Centre of the field (deg).
    radius : float, optional
        Bound of the catalog and the pointings (deg); default one image width.
    detectors : tuple of int
        Detectors of each exposure.
    n_epochs : int
        Epochs over which the exposures are spread (variable sources change between them).
    variable_fraction : float
        Share of variable sources.
    flux_range_ujy : (float, float)
        Range of the sources' reference fluxes ``f0`` (µJy).
    read_noise : float
        Read noise (MJy/sr per pixel).
    noiseless : bool
        No noise and no pixel artefacts (for truth checks of the source model).
    artefacts : bool
        Hot, cold, transient and dead pixels (False keeps the noise, drops them).
    cutouts : {"centre", "random"}
        Where on the detector a cut-out lies: at its centre, or anywhere (so the images of one
        sky position sample every wavelength of the detector).
    count_slope : float
        Source fluxes follow dN/dS ∝ S^-count_slope over ``flux_range_ujy`` (1: uniform in log S).
    min_separation_arcsec : float
        Sources closer than this are redrawn (0 for crowded skies, where neighbours inside one
        PSF are the rule).
    uncatalogued_below_ujy : float
        Sources fainter than this are drawn in the images but left out of ``catalog.csv``.
    psf_gradient : float
        The PSF width changes from zone to zone along the detector's x axis (sigma x (1 +
        psf_gradient u), u = -1 .. 1 from the left to the right edge), so a source measured
        with the wrong zone's PSF shows it.
    flat_spectra : bool
        Every source has the same flux at every wavelength (f0).
    hot_fraction : float
        Share of pixels made hot (+5 to +50 MJy/sr) and flagged HOT.
    psf_erratum : bool
        QR2 files of pipeline VERSION 6.5.4 whose PSF header carries the zone centres
        transposed, as IRSA's PSF erratum describes.
    moving_fraction : float
        Share of sources with a proper motion (20 to ``max_proper_motion`` mas/yr, log-uniform,
        random direction) and a parallax (tangential speeds of 20-80 km/s); ``catalog.csv``
        then gives Gaia's pmra, pmdec, parallax and ref_epoch columns, and positions at
        ``catalog_epoch``, while the images show each source where it is when they are taken.
    max_proper_motion : float
        Largest proper motion (mas/yr).
    catalog_epoch : float
        Julian year of the catalog positions (Gaia DR3: 2016.0).
    header_offset_arcsec : float
        Each image's celestial WCS points this far off (in a random direction): the sources lie
        that far from where the header puts them.
    galaxy_fraction : float
        Share of sources that are galaxies, of the Tractor types ``galaxy_types`` (REX, EXP,
        DEV, SER), half-light radii in ``galaxy_radius_arcsec``, ellipticities ``|e|`` up to 0.5 (REX round),
        Sérsic indices 0.7-5 (SER); ``catalog.csv`` then carries type, shape_r, shape_e1,
        shape_e2 and sersic, and the images show each profile, cut at 8 half-light radii,
        through the PSF.
    galaxy_types : tuple of str
        The types drawn, equally often.
    galaxy_radius_arcsec : (float, float)
        Range of the half-light radii (uniform).
    """

    n_images: int = 24
    size: int = 256
    n_sources: int = 300
    seed: int = 0
    layout: str = "qr2"
    center: tuple[float, float] = (150.1, 2.2)
    radius: float | None = None
    detectors: tuple[int, ...] = channels.DETECTORS
    n_epochs: int = 3
    variable_fraction: float = 0.2
    flux_range_ujy: tuple[float, float] = (30.0, 30000.0)
    read_noise: float = 0.006  # MJy/sr per pixel
    noiseless: bool = False
    artefacts: bool = True
    cutouts: str = "centre"
    count_slope: float = 1.0
    min_separation_arcsec: float = 20.0
    uncatalogued_below_ujy: float = 0.0
    psf_gradient: float = 0.0
    flat_spectra: bool = False
    hot_fraction: float = 2e-4
    psf_erratum: bool = False
    moving_fraction: float = 0.0
    max_proper_motion: float = 500.0
    catalog_epoch: float = 2016.0
    header_offset_arcsec: float = 0.0
    galaxy_fraction: float = 0.0
    galaxy_types: tuple[str, ...] = ("REX", "EXP", "DEV", "SER")
    galaxy_radius_arcsec: tuple[float, float] = (1.0, 4.0)

    def __post_init__(self) -> None:
        need = functools.partial(require, self)
        need(self.layout in QR_VERSIONS, "layout", "must be 'qr2' or 'qr3'")
        need(16 <= self.size <= channels.N_PIX, "size", f"must be within 16..{channels.N_PIX}")
        need(self.n_images >= 1, "n_images", "must be positive")
        need(self.n_sources >= 1, "n_sources", "must be positive")
        need(bool(self.detectors) and all(d in channels.DETECTORS for d in self.detectors), "detectors",
             "must be within 1..6")
        need(self.cutouts in ("centre", "random"), "cutouts", "must be 'centre' or 'random'")
        need(0 < self.flux_range_ujy[0] < self.flux_range_ujy[1], "flux_range_ujy", "must be (low, high) with 0 < low < high")
        need(self.count_slope >= 0, "count_slope", "must be >= 0")
        need(self.min_separation_arcsec >= 0, "min_separation_arcsec", "must be >= 0")
        need(-0.5 < self.psf_gradient < 0.5, "psf_gradient", "must be within (-0.5, 0.5)")
        need(0 <= self.hot_fraction <= 0.1, "hot_fraction", "must be within [0, 0.1]")
        need(not self.psf_erratum or self.layout == "qr2", "psf_erratum", "applies to QR2 files only")
        need(0 <= self.moving_fraction <= 1, "moving_fraction", "must be within [0, 1]")
        need(self.max_proper_motion > 20, "max_proper_motion", "must be > 20 mas/yr")
        need(0 <= self.header_offset_arcsec <= 60, "header_offset_arcsec", "must be within [0, 60]")
        need(0 <= self.galaxy_fraction <= 1, "galaxy_fraction", "must be within [0, 1]")
        need(bool(self.galaxy_types) and set(self.galaxy_types) <= {"REX", "EXP", "DEV", "SER"}, "galaxy_types",
             "must be among REX, EXP, DEV, SER")
        need(0 < self.galaxy_radius_arcsec[0] <= self.galaxy_radius_arcsec[1] <= 12, "galaxy_radius_arcsec",
             "must be (low, high) with 0 < low <= high <= 12")
        need(len(self.center) == 2 and valid_position(*self.center), "center",
             "must be (ra 0..360, dec -90..90) deg")

    @property
    def region_radius(self) -> float:
        return self.radius if self.radius is not None else self.size * SCALE_DEG
