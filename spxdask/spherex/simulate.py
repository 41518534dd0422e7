"""Faithful synthetic SPHEREx L2 files with known truth.

The files follow ``spherex-l2-format`` (HDU list, types, BUNITs, TAN-SIP primary WCS with the
'A' and 'W' alternates, the per-detector WCS-WAVE control grids, PSF cube or QR3 ePSF table,
FLAGS bit names, time keywords) and the IRSA directory layout. Sources are point sources with
smooth spectra (optionally variable), drawn through the file's own PSF; the zodiacal light
model varies with wavelength and position; noise is drawn from VARIANCE. Truth tables give, per
source and image, the true flux density at the wavelength of the source's pixel.

The per-image work is a pure function (:func:`render_image`); :func:`simulate_sky` maps it over
the images with Dask.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from scipy.special import erf

from .._config import Config, require, valid_position
from .._io import atomic_path, write_parquet_atomic
from ..geometry import sky_to_tangent, tangent_to_sky
from . import channels, flags
from .flags import Flag
from .l2 import wave_lookup, wave_map
from .units import UJY_ARCSEC2_PER_MJY_SR, pixel_area_arcsec2

SCALE_DEG = channels.PIXEL_SCALE_ARCSEC / 3600.0
#: Nominal PSF core FWHM per detector (arcsec); the PSF_FWHM keyword of real files is 5-6".
PSF_FWHM_ARCSEC = {1: 4.9, 2: 5.0, 3: 5.2, 4: 5.6, 5: 6.0, 6: 6.3}
PSF_WING_FRACTION = 0.12  # light in the broad wing component
PSF_WING_SCALE = 2.8  # wing sigma / core sigma
TARGETID_BASE = 39627000000000000  # DESI-like 17-digit identifiers
MJD_START = 61027.0  # 2025-12-18
# A small SIP distortion (pixels relative to CRPIX), like the real files' order-3 terms.
SIP_A = {(0, 0): -0.359, (2, 0): 4e-7, (1, 1): -3e-7, (0, 2): 2e-7, (3, 0): -2e-10, (1, 2): 1e-10}
SIP_B = {(0, 0): -1.108, (2, 0): -2e-7, (1, 1): 4e-7, (0, 2): 3e-7, (2, 1): 1.5e-10, (0, 3): -1e-10}
QR_VERSIONS = {"qr2": ("l2b-v21", "6.5.7"), "qr3": ("l2b-v27", "7.0.1")}


@dataclass(frozen=True)
class SimConfig(Config):
    """What to simulate.

    ``n_images`` counts L2 files; exposures have one file per detector in ``detectors``.
    ``radius`` (deg) bounds the catalog and the pointings (default: one image width).
    ``noiseless`` drops noise and pixel artefacts (for truth checks of the source model);
    ``artefacts=False`` keeps the noise but drops the hot/cold/transient/dead pixels.
    Images smaller than the detector are cut-outs of it (IBE style): at its centre
    (``cutouts="centre"``) or anywhere on it (``"random"``, so the images of one sky position
    sample every wavelength of the detector).
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

    def __post_init__(self) -> None:
        need = functools.partial(require, self)
        need(self.layout in QR_VERSIONS, "layout", "must be 'qr2' or 'qr3'")
        need(16 <= self.size <= channels.N_PIX, "size", f"must be within 16..{channels.N_PIX}")
        need(self.n_images >= 1, "n_images", "must be positive")
        need(self.n_sources >= 1, "n_sources", "must be positive")
        need(bool(self.detectors) and all(d in channels.DETECTORS for d in self.detectors), "detectors",
             "must be within 1..6")
        need(self.cutouts in ("centre", "random"), "cutouts", "must be 'centre' or 'random'")
        need(len(self.center) == 2 and valid_position(*self.center), "center",
             "must be (ra 0..360, dec -90..90) deg")

    @property
    def region_radius(self) -> float:
        return self.radius if self.radius is not None else self.size * SCALE_DEG


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one L2 file (small; sent to one task)."""

    index: int
    obs_id: str
    expidn: int
    detector: int
    ra: float
    dec: float
    rotation_deg: float
    mjd_beg: float
    zodi_scale: float
    zodi_gradient: tuple[float, float]
    relpath: str
    origin: tuple[int, int]  # 0-based parent-detector pixel (x, y) of the image's first pixel
    sources: pd.DataFrame = field(repr=False)


# -- geometry ------------------------------------------------------------------------------
def central_origin(size: int) -> int:
    """0-based parent-detector pixel of a central cut-out's first pixel."""
    return (channels.N_PIX - size) // 2


def _fit_inverse_sip(size: int, order: int = 3) -> tuple[dict, dict]:
    u, v = np.meshgrid(np.linspace(-size / 2, size / 2, 25), np.linspace(-size / 2, size / 2, 25))
    u, v = u.ravel(), v.ravel()
    fu = u + sum(c * u**p * v**q for (p, q), c in SIP_A.items())
    fv = v + sum(c * u**p * v**q for (p, q), c in SIP_B.items())
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p)]
    design = np.column_stack([fu**p * fv**q for p, q in terms])
    ca = np.linalg.lstsq(design, u - fu, rcond=None)[0]
    cb = np.linalg.lstsq(design, v - fv, rcond=None)[0]
    return dict(zip(terms, ca)), dict(zip(terms, cb))


def image_wcs_header(spec: ImageSpec, size: int) -> fits.Header:
    """Celestial TAN-SIP WCS plus the 'A' (parent pixel) and 'W' (WAVE-TAB) alternates."""
    h = fits.Header()
    ox, oy = spec.origin
    t = np.radians(spec.rotation_deg)
    pc = SCALE_DEG * np.array([[np.cos(t), np.sin(t)], [np.sin(t), -np.cos(t)]])
    # (spec.ra, spec.dec) is the image centre; CRVAL is the detector centre (CRPIX, as in a cut-out)
    centre = np.array([1019.5 - ox - (size - 1) / 2, 1019.5 - oy - (size - 1) / 2])
    xi, eta = pc @ centre
    crval = tangent_to_sky(spec.ra, spec.dec, np.array(xi), np.array(eta))
    h["WCSAXES"] = 2
    h["CRPIX1"], h["CRPIX2"] = channels.N_PIX / 2 + 0.5 - ox, channels.N_PIX / 2 + 0.5 - oy
    h["CDELT1"], h["CDELT2"] = 1.0, 1.0
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CRVAL1"], h["CRVAL2"] = float(crval[0]), float(crval[1])
    h["LONPOLE"], h["LATPOLE"] = 180.0, float(crval[1])
    h["RADESYS"] = "ICRS"
    h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = pc[0, 0], pc[0, 1], pc[1, 0], pc[1, 1]
    ap, bp = _fit_inverse_sip(channels.N_PIX)
    for name, coeffs in (("A", SIP_A), ("B", SIP_B), ("AP", ap), ("BP", bp)):
        h[f"{name}_ORDER"] = 3
        for (p, q), c in coeffs.items():
            h[f"{name}_{p}_{q}"] = float(c)
    # 'A': 0-based parent-detector pixel coordinates (shifted like an IBE cutout)
    h["WCSAXESA"] = 2
    h["WCSNAMEA"] = "0-based active pixel coordinates"
    for i, o in ((1, ox), (2, oy)):
        h[f"CRPIX{i}A"] = float(1 - o)
        h[f"CDELT{i}A"] = 1.0
        h[f"CUNIT{i}A"] = "pixel"
        h[f"CTYPE{i}A"] = "LINEAR"
        h[f"CRVAL{i}A"] = 0.0
    h["LATPOLEA"] = 90.0
    # 'W': per-pixel wavelength and bandwidth from the WCS-WAVE lookup table
    h.set("WCSAXESW", 2, "Two output axes: wavelength and bandwidth")
    h["WCSNAMEW"] = "Approximated per-pixel wavelength and bandwidth"
    h["CNAME1W"], h["CNAME2W"] = "Wavelength", "Bandwidth"
    for i, what, o in ((1, "wavelength", ox), (2, "bandwidth", oy)):
        h.set(f"CRPIX{i}W", float(1 - o), "Lookup table is in raw FITS coordinates")
        h[f"CDELT{i}W"] = 1.0
        h[f"CUNIT{i}W"] = "um"
        h.set(f"CTYPE{i}W", "WAVE-TAB", "Bilinear lookup table, FITS Paper 3, Sect 6.1")
        h[f"CRVAL{i}W"] = 1.0
        h.set(f"PV{i}_3W", i, f"Index of {what} in VALUES array")
        h.set(f"PS{i}_0W", "WCS-WAVE", "Extension with the lookup table")
        h.set(f"PS{i}_1W", "VALUES", "Column with values")
        h.set(f"PS{i}_2W", "X" if i == 1 else "Y", f"Column with control points for detector in {'X' if i == 1 else 'Y'}")
    return h


def wave_table(detector: int, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detector's WCS-WAVE control points (1-based parent pixels) and VALUES (ny, nx, 2).

    Wavelength falls log-linearly with row and rises along x towards the edges (the "smile",
    +1.04 % as in the real D1 table), spanning the real tables' extremes; bandwidth is
    wavelength / R from the packaged channel table. QR3 shifts D5 and D6 by +0.0064 micron.
    """
    det = channels.detector(detector)
    xs = np.array(det.wave_x_control, float)
    ys = np.array(det.wave_y_control, float)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    t = (yy - 1) / (channels.N_PIX - 1)
    smile = 0.0104
    top_centre = det.wave_top_um / (1 + smile)  # the table maximum is at the edges of row 1
    wl = top_centre * (det.wave_bottom_um / top_centre) ** t * (1 + smile * ((xx - 1020.5) / 1019.5) ** 2)
    if layout == "qr3" and detector in (5, 6):
        wl = wl + 0.0064
    bw = wl / channels.resolving_power(detector, wl)
    return xs, ys, np.stack([wl, bw], axis=-1).astype(np.float32)


# -- the PSF ---------------------------------------------------------------------------------
def zone_grid(detector: int, layout: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Zone centres (0-based parent pixels, x-fast) and zone widths of the PSF model."""
    nzx, nzy = (11, 11) if layout == "qr2" else ((11, 41) if detector == 3 else (21, 21))
    wx, wy = channels.N_PIX / nzx, channels.N_PIX / nzy
    cx = (np.arange(nzx) + 0.5) * wx - 0.5
    cy = (np.arange(nzy) + 0.5) * wy - 0.5
    gx, gy = np.meshgrid(cx, cy)
    return gx.ravel(), gy.ravel(), wx, wy


def psf_sigma(detector: int, xp: np.ndarray, yp: np.ndarray) -> np.ndarray:
    """Core Gaussian sigma (native pixels) at parent pixel (xp, yp): broader at the corners."""
    base = PSF_FWHM_ARCSEC[detector] / channels.PIXEL_SCALE_ARCSEC / 2.3548
    r2 = ((np.asarray(xp) - 1019.5) ** 2 + (np.asarray(yp) - 1019.5) ** 2) / 1019.5**2
    return base * (1 + 0.06 * r2)


def _box_integral(lo: np.ndarray, hi: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Integral over [lo, hi] of a unit 1-D Gaussian of width ``sigma`` centred on 0, summed
    over the core and wing components (their weights are applied in :func:`_psf_pixels`)."""
    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf(hi / s) - erf(lo / s))


def _psf_pixels(dx_lo, dx_hi, dy_lo, dy_hi, sigma) -> np.ndarray:
    """Fraction of the PSF (core + wing) falling in boxes given by edges relative to the
    source, broadcasting (..., ny, 1) against (..., 1, nx)."""
    out = 0.0
    for weight, scale in ((1 - PSF_WING_FRACTION, 1.0), (PSF_WING_FRACTION, PSF_WING_SCALE)):
        out = out + weight * _box_integral(dy_lo, dy_hi, sigma * scale) * _box_integral(dx_lo, dx_hi, sigma * scale)
    return out


def psf_extension(detector: int, layout: str) -> fits.BinTableHDU | fits.ImageHDU:
    """The file's PSF: QR2 cube (121, 101, 101) of sub-pixel integrals (10x), or the QR3 EPSF
    table (33x33 samples at 5x of the pixel-integrated PSF), one per zone."""
    gx, gy, wx, wy = zone_grid(detector, layout)
    sig = psf_sigma(detector, gx, gy)[:, None, None]
    if layout == "qr2":
        os_, n = 10, 101
        edges = (np.arange(n) - (n - 1) / 2 - 0.5) / os_
        lo, hi = edges, edges + 1 / os_
        cube = _psf_pixels(lo[None, None, :], hi[None, None, :], lo[None, :, None], hi[None, :, None], sig)
        cube = (cube / cube.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
        hdu = fits.ImageHDU(cube, name="PSF")
        h = hdu.header
        h["BUNIT"] = ""
        h["CRPIX1"] = h["CRPIX2"] = (n + 1) / 2
        h["CDELT1"] = h["CDELT2"] = channels.PIXEL_SCALE_ARCSEC / os_
        h["CUNIT1"] = h["CUNIT2"] = "arcsec"
        h["CTYPE1"], h["CTYPE2"] = "XANG", "YANG"
        h["CRVAL1"] = h["CRVAL2"] = 0.0
        h["MJDREF"] = 0.0
        h["OVERSAMP"] = os_
        for k in range(gx.size):
            ix, iy = k % 11, k // 11
            h.set(f"XCTR_{k + 1}", gx[k] + 1, f"Center of x zone ({ix}, {iy})")
            h.set(f"YCTR_{k + 1}", gy[k] + 1, f"Center of y zone ({ix}, {iy})")
            h.set(f"XWID_{k + 1}", wx, f"Width of x zone ({ix}, {iy})")
            h.set(f"YWID_{k + 1}", wy, f"Width of y zone ({ix}, {iy})")
        return hdu
    os_, n = 5, 33
    off = (np.arange(n) - (n - 1) / 2) / os_
    epsf = _psf_pixels(off[None, None, :] - 0.5, off[None, None, :] + 0.5,
                       off[None, :, None] - 0.5, off[None, :, None] + 0.5, sig)
    epsf = epsf / (epsf.sum(axis=(1, 2), keepdims=True) / os_**2)
    nzx = int(round(channels.N_PIX / wx))
    xs, ys, values = wave_table(detector, layout)
    cwave, cband = wave_lookup(xs, ys, values, gx + 1, gy + 1)
    cols = [
        fits.Column("BINX", "J", array=np.arange(gx.size) % nzx),
        fits.Column("BINY", "J", array=np.arange(gx.size) // nzx),
        fits.Column("XCENTER", "D", array=gx + 1),
        fits.Column("YCENTER", "D", array=gy + 1),
        fits.Column("XWIDTH", "D", array=np.full(gx.size, wx)),
        fits.Column("YWIDTH", "D", array=np.full(gx.size, wy)),
        fits.Column("NSTAR", "J", array=np.full(gx.size, 200)),
        fits.Column("NEFF_MEAN", "D", array=np.full(gx.size, 150.0)),
        fits.Column("CWAVE", "D", array=cwave, unit="um"),
        fits.Column("CBAND", "D", array=cband, unit="um"),
        fits.Column("EPSF", f"{n * n}D", array=epsf.reshape(gx.size, n * n)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="EPSF")
    h = hdu.header
    h["OVSMPX"], h["OVSMPY"] = os_, os_
    h["DETCOORD"] = "sky"
    h["ORDERING"] = "x-fast then y"
    h["HISTORY"] = f"Calibration source file: epsf_D{detector}_synthetic.fits"
    return hdu


def render_stamps(img: np.ndarray, x: np.ndarray, y: np.ndarray, amplitude: np.ndarray,
                  sigma: np.ndarray, half: int = 8) -> None:
    """Add point sources (total ``amplitude`` in image units x pixels) at 0-based (x, y),
    each the two-component PSF integrated exactly over native pixels."""
    ny, nx = img.shape
    offs = np.arange(-half, half + 1)
    for xi, yi, amp, sg in zip(x, y, amplitude, sigma):
        cx, cy = int(np.round(xi)), int(np.round(yi))
        px, py = cx + offs, cy + offs
        stamp = _psf_pixels((px - 0.5 - xi)[None, :], (px + 0.5 - xi)[None, :],
                            (py - 0.5 - yi)[:, None], (py + 0.5 - yi)[:, None], sg)
        okx = (px >= 0) & (px < nx)
        oky = (py >= 0) & (py < ny)
        img[np.ix_(py[oky], px[okx])] += amp * stamp[np.ix_(oky, okx)]


# -- sources --------------------------------------------------------------------------------
def make_catalog(cfg: SimConfig) -> pd.DataFrame:
    """The source catalog with SEDs: targetid (17-digit int64), ra, dec and SED parameters.

    f(lambda, t) = f0 (lambda/1.5um)^(alpha + beta ln(lambda/1.5um)) (1 + amp sin(2 pi t / period + phase)).
    """
    rng = np.random.default_rng([cfg.seed, 1])
    ra0, dec0 = cfg.center
    min_sep = 20.0 / 3600
    xi, eta = np.empty(0), np.empty(0)
    while xi.size < cfg.n_sources:  # uniform in the disc, rejecting close pairs
        r = cfg.region_radius * np.sqrt(rng.uniform(0, 1, cfg.n_sources))
        phi = rng.uniform(0, 2 * np.pi, cfg.n_sources)
        for a, b in zip(r * np.cos(phi), r * np.sin(phi)):
            if xi.size == cfg.n_sources:
                break
            if xi.size == 0 or np.min(np.hypot(xi - a, eta - b)) > min_sep:
                xi, eta = np.append(xi, a), np.append(eta, b)
    ra, dec = tangent_to_sky(ra0, dec0, xi, eta)
    n = cfg.n_sources
    lo, hi = cfg.flux_range_ujy
    variable = rng.uniform(0, 1, n) < cfg.variable_fraction
    return pd.DataFrame({
        # consecutive ids differ in the last digits only: float64 cannot tell them apart
        "targetid": (TARGETID_BASE + np.cumsum(rng.integers(1, 4, n))).astype(np.int64),
        "ra": ra,
        "dec": dec,
        "f0_ujy": np.exp(rng.uniform(np.log(lo), np.log(hi), n)),
        "alpha": rng.uniform(-2.0, 1.0, n),
        "beta": rng.uniform(-0.5, 0.5, n),
        "variable": variable,
        "amplitude": np.where(variable, rng.uniform(0.05, 0.3, n), 0.0),
        "period_days": np.where(variable, rng.uniform(0.5, 200.0, n), np.inf),
        "phase": rng.uniform(0, 2 * np.pi, n),
    })


def true_flux(sed: pd.DataFrame, wavelength_um: np.ndarray, mjd: np.ndarray) -> np.ndarray:
    """True flux density (microjansky) of each SED row at its wavelength and time."""
    lr = np.log(np.asarray(wavelength_um, float) / 1.5)
    f = sed["f0_ujy"].to_numpy() * np.exp(sed["alpha"].to_numpy() * lr + sed["beta"].to_numpy() * lr**2)
    phase = 2 * np.pi * np.asarray(mjd) / sed["period_days"].to_numpy() + sed["phase"].to_numpy()
    vary = sed["amplitude"].to_numpy() * np.sin(phase)
    return f * (1 + vary)


# -- survey plan ------------------------------------------------------------------------------
def _obs_id(mjd: float, large: int, small: int) -> tuple[str, str]:
    t = Time(mjd, format="mjd").to_datetime()
    year, week, weekday = t.isocalendar()
    plan = f"{year}W{week:02d}_{1 if weekday <= 3 else 2}A"
    return plan, f"{plan}_{large:04d}_{small}"


def plan_survey(cfg: SimConfig, catalog: pd.DataFrame) -> list[ImageSpec]:
    """Pointings with dithers and rotations, all requested detectors, several epochs.

    Detector pairs (D1, D4), (D2, D5), (D3, D6) see the same sky; the three pairs sit side by
    side, one image width apart, as on the SPHEREx focal plane.
    """
    rng = np.random.default_rng([cfg.seed, 2])
    n_exp = -(-cfg.n_images // len(cfg.detectors))
    width = cfg.size * SCALE_DEG * 1.02
    version, _ = QR_VERSIONS[cfg.layout]
    specs: list[ImageSpec] = []
    epoch_start: dict[int, float] = {}  # epochs half a year apart; exposures 2 min apart within one
    for e in range(n_exp):
        epoch = e % cfg.n_epochs
        offset = rng.uniform(0, 0.5)
        epoch_start.setdefault(epoch, MJD_START + 182.6 * epoch + offset)
        mjd = epoch_start[epoch] + (e // cfg.n_epochs) * 0.0014
        r = 0.5 * cfg.region_radius * np.sqrt(rng.uniform())
        phi = rng.uniform(0, 2 * np.pi)
        rot = rng.uniform(0, 360)
        large, small = 100 + e // 4, e % 4 + 1
        plan, obs_id = _obs_id(mjd, large, small)
        proc = Time(mjd + 30, format="mjd").to_datetime()
        tag = f"{version}-{proc.year}-{proc.timetuple().tm_yday:03d}"
        for det in cfg.detectors:
            if len(specs) == cfg.n_images:
                break
            # pair offset along the rotated y axis, centred on the requested detectors
            k = (det - 1) % 3 - 1 - np.mean([(d - 1) % 3 - 1 for d in cfg.detectors])
            t = np.radians(rot)
            xi = r * np.cos(phi) - k * width * np.sin(t)
            eta = r * np.sin(phi) + k * width * np.cos(t)
            ra, dec = tangent_to_sky(*cfg.center, np.array(xi), np.array(eta))
            ra, dec = float(ra), float(dec)
            txi, teta = sky_to_tangent(ra, dec, catalog["ra"].to_numpy(), catalog["dec"].to_numpy())
            near = np.hypot(txi, teta) < cfg.size * SCALE_DEG * 0.75 + 0.01
            name = f"level2_{obs_id}D{det}_spx_{tag}.fits"
            expidn = int(f"{plan[:4]}{plan[5:7]}{plan[8]}01{large:04d}{small}{det}")
            if cfg.cutouts == "random":
                origin = tuple(int(v) for v in rng.integers(0, channels.N_PIX - cfg.size + 1, 2))
            else:
                origin = (central_origin(cfg.size),) * 2
            specs.append(ImageSpec(
                index=len(specs), obs_id=obs_id, expidn=expidn, detector=det, ra=ra, dec=dec,
                rotation_deg=rot, mjd_beg=mjd, zodi_scale=float(rng.uniform(0.97, 1.03)),
                zodi_gradient=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
                relpath=f"{cfg.layout}/level2/{plan}/{tag}/{det}/{name}", origin=origin,
                sources=catalog.loc[near].reset_index(drop=True),
            ))
    return specs


# -- one image --------------------------------------------------------------------------------
def zodi_model(wavelength_um: np.ndarray, xp: np.ndarray, yp: np.ndarray,
               gradient: tuple[float, float]) -> np.ndarray:
    """Zodiacal light (MJy/sr): falls from ~0.35 MJy/sr at 0.75 um to a minimum near 3.5 um,
    with a linear gradient over the detector."""
    lam = np.asarray(wavelength_um)
    spectrum = 0.35 * (lam / 0.75) ** -1.6 + 0.02 * (lam / 3.5) ** 3
    u = (xp - 1019.5) / 1019.5
    v = (yp - 1019.5) / 1019.5
    return spectrum * (1 + gradient[0] * u + gradient[1] * v)


def render_image(spec: ImageSpec, cfg: SimConfig) -> tuple[fits.HDUList, pd.DataFrame]:
    """The L2 file of ``spec`` and its truth rows (one per source whose centre is in the image)."""
    rng = np.random.default_rng([cfg.seed, 3, spec.index])
    n = cfg.size
    ox, oy = spec.origin
    wcs_h = image_wcs_header(spec, n)
    wcs = WCS(wcs_h, naxis=2)
    xs_c, ys_c, values = wave_table(spec.detector, cfg.layout)
    axis = np.arange(n) + 1.0
    wl_map, _ = wave_map(xs_c, ys_c, values.astype(float), axis + ox, axis + oy)
    yy, xx = np.mgrid[0:n, 0:n]
    zodi = zodi_model(wl_map, xx + ox, yy + oy, spec.zodi_gradient).astype(np.float32)

    src = spec.sources
    x, y = wcs.all_world2pix(src["ra"].to_numpy(), src["dec"].to_numpy(), 0)
    inside = (x >= -0.5) & (x <= n - 0.5) & (y >= -0.5) & (y <= n - 0.5)
    near = (x > -10) & (x < n + 9) & (y > -10) & (y < n + 9)
    src, x, y, inside = src[near], x[near], y[near], inside[near]
    wl, bw = wave_lookup(xs_c, ys_c, values, x + ox + 1.0, y + oy + 1.0)
    mjd_mid = spec.mjd_beg + 0.5 * 113.5826 / 86400
    flux = true_flux(src, wl, np.full(len(src), mjd_mid))
    area = pixel_area_arcsec2(wcs, x, y)
    gx, gy, _, _ = zone_grid(spec.detector, cfg.layout)
    zone = np.argmin((x[:, None] + ox - gx) ** 2 + (y[:, None] + oy - gy) ** 2, axis=1)
    sigma = psf_sigma(spec.detector, gx, gy)[zone]
    model = np.zeros((n, n))
    render_stamps(model, x, y, flux / (area * UJY_ARCSEC2_PER_MJY_SR), sigma)

    variance = (cfg.read_noise**2 + 2e-4 * (model + zodi)).astype(np.float32)
    image = model + spec.zodi_scale * zodi
    flag = np.zeros((n, n), np.int32)
    flag[model > 0.5 * cfg.read_noise] |= Flag.SOURCE
    if not cfg.noiseless:
        image = image + rng.standard_normal((n, n)) * np.sqrt(variance)
        if cfg.artefacts:
            _add_artefacts(rng, image, variance, flag, spec.detector)
    primary = fits.PrimaryHDU()
    primary.header["VERSION"] = QR_VERSIONS[cfg.layout][1]
    median_area = float(np.median(pixel_area_arcsec2(wcs, xx[::16, ::16].ravel(), yy[::16, ::16].ravel())))
    common = _common_header(spec, wcs_h, area=median_area)
    hdus = [primary,
            _image_hdu("IMAGE", image.astype(np.float32), "MJy / sr", common, flag),
            _flags_hdu(flag, common, cfg.layout),
            _image_hdu("VARIANCE", variance, "MJy2 / sr2", common),
            _image_hdu("ZODI", zodi, "MJy / sr", common),
            psf_extension(spec.detector, cfg.layout),
            _wave_hdu(xs_c, ys_c, values)]
    truth = pd.DataFrame({
        "targetid": src["targetid"].to_numpy(), "obs_id": spec.obs_id, "detector": spec.detector,
        "filename": Path(spec.relpath).name, "mjd": mjd_mid, "x": x, "y": y,
        "wavelength": wl, "bandwidth": bw, "flux_true": flux, "psf_sigma": sigma,
        "pixel_area": area,
    })[inside]
    return fits.HDUList(hdus), truth.reset_index(drop=True)


def _add_artefacts(rng, image, variance, flag, detector) -> None:
    n = image.shape[0]
    npix = n * n

    def pick(rate):
        k = max(1, int(rng.poisson(rate * npix)))
        return rng.integers(0, n, k), rng.integers(0, n, k)

    yy, xx = pick(2e-4)
    image[yy, xx] += rng.uniform(5, 50, yy.size)
    flag[yy, xx] |= Flag.HOT
    yy, xx = pick(1e-4)
    image[yy, xx] *= 0.1
    flag[yy, xx] |= Flag.COLD
    yy, xx = pick(3e-4)
    image[yy, xx] += rng.uniform(1, 10, yy.size)
    flag[yy, xx] |= Flag.TRANSIENT | Flag.OUTLIER
    yy, xx = pick(1e-4)  # dead pixels: NaN variance, some NaN image values
    variance[yy, xx] = np.nan
    image[yy[::2], xx[::2]] = np.nan
    flag[yy, xx] |= Flag.NONFUNC
    if detector in (3, 4):
        flag[:, : max(1, n // 64)] |= Flag.DICHROIC


def _common_header(spec: ImageSpec, wcs_h: fits.Header, area: float) -> fits.Header:
    h = fits.Header()
    h.set("DETECTOR", spec.detector, "1-3: SWIR, 4-6: MWIR")
    h.set("OBSID", spec.obs_id)
    h.set("EXPIDN", spec.expidn, "Integer Exposure ID")
    h.set("DATE", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3])
    h["TIMESYS"] = "UTC"
    h["MJDREF"] = 0.0
    exptime = 113.5826
    for key, mjd in (("BEG", spec.mjd_beg), ("AVG", spec.mjd_beg + exptime / 2 / 86400),
                     ("END", spec.mjd_beg + exptime / 86400)):
        iso = Time(mjd, format="mjd", scale="utc").isot
        if key == "BEG":
            h["DATE-OBS"], h["MJD-OBS"] = iso, mjd
        h[f"DATE-{key}"], h[f"MJD-{key}"] = iso, mjd
    h.set("XPOSURE", exptime, "[s] exposure time")
    h.set("TELAPSE", 118.1873, "[s] elapsed time, starts before MJD-BEG")
    h.set("PSF_FWHM", PSF_FWHM_ARCSEC[spec.detector], "[arcsec] median PSF FWHM")
    h.set("HIERARCH OMEGA_MEDIAN", round(area, 4), "[arcsec2] median pixel solid angle")
    h.set("HIERARCH OMEGA_STDDEV", 0.01, "[arcsec2]")
    h["DETCOORD"] = "sky"
    h["L2DQAFLG"] = "Pass"
    h.set("HIERARCH SPS_FLAGS", "all_sky")
    h.extend(wcs_h)
    h["HISTORY"] = "Synthetic SPHEREx L2 image written by spxdask.spherex.simulate"
    return h


def _image_hdu(name: str, data: np.ndarray, bunit: str, common: fits.Header,
               flag: np.ndarray | None = None) -> fits.ImageHDU:
    hdu = fits.ImageHDU(data, name=name)
    hdu.header["EXTTYPE"] = name
    hdu.header["BUNIT"] = bunit
    hdu.header.extend(common)
    if flag is not None:  # the IMAGE header carries the per-flag pixel counts
        for f in (Flag.SOURCE, Flag.HOT, Flag.COLD, Flag.TRANSIENT, Flag.NONFUNC):
            hdu.header[f"HIERARCH L2 N_{f.name}"] = int(np.count_nonzero(flag & f))
    return hdu


def _flags_hdu(flag: np.ndarray, common: fits.Header, layout: str) -> fits.ImageHDU | fits.CompImageHDU:
    if layout == "qr3":
        hdu = fits.CompImageHDU(flag, name="FLAGS", compression_type="RICE_1", tile_shape=(1, flag.shape[1]))
        for key, name, comment in flags.qr3_header_cards():
            hdu.header.set(key, name, comment[:36])
    else:
        hdu = fits.ImageHDU(flag, name="FLAGS")
        for key, bit, comment in flags.qr2_header_cards():
            hdu.header.set(f"HIERARCH {key}", bit, comment[:36])
    hdu.header["EXTTYPE"] = "MASK"
    hdu.header["BUNIT"] = ""
    hdu.header.extend(common)
    return hdu


def _wave_hdu(xs: np.ndarray, ys: np.ndarray, values: np.ndarray) -> fits.BinTableHDU:
    nx, ny = xs.size, ys.size
    cols = [fits.Column("X", f"{nx}J", array=xs.astype(np.int32)[None, :], dim=f"({nx})"),
            fits.Column("Y", f"{ny}J", array=ys.astype(np.int32)[None, :], dim=f"({ny})"),
            fits.Column("VALUES", f"{2 * nx * ny}E", array=values[None], dim=f"(2,{nx},{ny})")]
    return fits.BinTableHDU.from_columns(cols, name="WCS-WAVE")


def write_image(spec: ImageSpec, cfg: SimConfig, archive_dir: Path) -> pd.DataFrame:
    """Render one image, write it atomically under ``archive_dir``, return its truth rows."""
    hdul, truth = render_image(spec, cfg)
    path = Path(archive_dir) / spec.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        hdul.writeto(tmp)
    return truth


# -- a whole sky -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulatedSky:
    """Where :func:`simulate_sky` wrote things."""

    root: Path
    archive: Path
    catalog: Path
    truth_sources: Path
    truth_detections: Path
    files: list[Path]


def simulate_sky(out: str | Path, cfg: SimConfig = SimConfig(), *, scheduler: str | None = None) -> SimulatedSky:
    """Write a simulated survey: ``out/archive/<IRSA layout>``, ``out/catalog.csv`` (targetid,
    ra, dec) and ``out/truth/{sources,detections}.parquet``.

    Images are rendered in parallel with Dask (the current Client if one runs, else
    ``scheduler``, default processes when there are several images).
    """
    import dask
    import dask.bag as db
    from distributed import get_client

    root = Path(out)
    archive = root / "archive"
    catalog = make_catalog(cfg)
    specs = plan_survey(cfg, catalog)
    truths = db.from_sequence(specs, npartitions=min(len(specs), 64)).map(write_image, cfg=cfg, archive_dir=archive)
    if scheduler is None:
        try:
            get_client()
        except ValueError:
            scheduler = "processes" if len(specs) > 2 else "sync"
    with dask.config.set(scheduler=scheduler) if scheduler else contextlib.nullcontext():
        frames = truths.compute()
    truth_dir = root / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "catalog.csv") as tmp:
        catalog[["targetid", "ra", "dec"]].to_csv(tmp, index=False, float_format="%.10f")
    write_parquet_atomic(catalog, truth_dir / "sources.parquet")
    write_parquet_atomic(pd.concat(frames, ignore_index=True), truth_dir / "detections.parquet")
    return SimulatedSky(root, archive, root / "catalog.csv", truth_dir / "sources.parquet",
                        truth_dir / "detections.parquet", [archive / s.relpath for s in specs])
