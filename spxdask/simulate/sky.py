"""The simulated sky and survey: a catalog of sources with spectra and light curves, and a
plan of pointings (which image sees which sources when)."""

from __future__ import annotations

from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import Distance, SkyCoord, get_body_barycentric
from astropy.time import Time

from ..geometry import sky_to_tangent, tangent_to_sky
from ..spherex import channels
from .config import PIXEL_SCALE_ARCSEC, QR_VERSIONS, SCALE_DEG, SimConfig

TARGETID_BASE = 39627000000000000  # DESI-like 17-digit identifiers
MJD_START = 61027.0  # 2025-12-18
#: The motion columns of a catalog of moving sources, in Gaia's names and units.
GAIA_MOTION = ("pmra", "pmdec", "parallax", "ref_epoch")
#: The shape columns of a catalog with galaxies, in the Legacy Surveys' (Tractor's) names and units.
TRACTOR_SHAPE = ("type", "shape_r", "shape_e1", "shape_e2", "sersic")


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one L2 file (small; sent to one task).

    Parameters
    ----------
    index : int
        Its number in the survey.
    obs_id : str
        Its observation id.
    expidn : int
        Its exposure number.
    detector : int
        1-6.
    ra, dec : float
        Pointing of the image centre (deg).
    rotation_deg : float
        Position angle of the image.
    mjd_beg : float
        Start of the exposure (MJD).
    zodi_scale : float
        Scale of the zodiacal light drawn in it.
    zodi_gradient : (float, float)
        Its gradient along x and y.
    relpath : str
        Path of the file in the archive (IRSA's layout).
    origin : (int, int)
        0-based parent-detector pixel (x, y) of the image's first pixel.
    sources : DataFrame
        The sources it may see (with their SEDs).
    header_offset : (float, float)
        Where the sources truly are minus where the header's WCS puts them (pixels, x and y).
    """

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
    header_offset: tuple[float, float] = (0.0, 0.0)

def central_origin(size: int) -> int:
    """0-based parent-detector pixel of a central cut-out's first pixel."""
    return (channels.N_PIX - size) // 2

def make_catalog(config: SimConfig) -> pd.DataFrame:
    """The source catalog with SEDs: targetid (17-digit int64), ra, dec and SED parameters.

    f(lambda, t) = f0 (lambda/1.5um)^(alpha + beta ln(lambda/1.5um)) (1 + amp sin(2 pi t / period + phase)).

    Parameters
    ----------
    config : SimConfig

    Returns
    -------
    DataFrame
        One row per source; ``catalogued`` says which go into ``catalog.csv``.
    """
    rng = np.random.default_rng([config.seed, 1])
    ra0, dec0 = config.center
    n = config.n_sources
    min_sep = config.min_separation_arcsec / 3600
    xi, eta = np.empty(0), np.empty(0)
    while xi.size < n:  # uniform in the disc, rejecting close pairs
        r = config.region_radius * np.sqrt(rng.uniform(0, 1, n))
        phi = rng.uniform(0, 2 * np.pi, n)
        if min_sep == 0:
            xi, eta = r * np.cos(phi), r * np.sin(phi)
            break
        for a, b in zip(r * np.cos(phi), r * np.sin(phi)):
            if xi.size == n:
                break
            if xi.size == 0 or np.min(np.hypot(xi - a, eta - b)) > min_sep:
                xi, eta = np.append(xi, a), np.append(eta, b)
    ra, dec = tangent_to_sky(ra0, dec0, xi, eta)
    variable = rng.uniform(0, 1, n) < config.variable_fraction
    frame = pd.DataFrame({
        # consecutive ids differ in the last digits only: float64 cannot tell them apart
        "targetid": (TARGETID_BASE + np.cumsum(rng.integers(1, 4, n))).astype(np.int64),
        "ra": ra,
        "dec": dec,
        "f0_ujy": _source_counts(rng, n, *config.flux_range_ujy, config.count_slope),
        "alpha": rng.uniform(-2.0, 1.0, n),
        "beta": rng.uniform(-0.5, 0.5, n),
        "variable": variable,
        "amplitude": np.where(variable, rng.uniform(0.05, 0.3, n), 0.0),
        "period_days": np.where(variable, rng.uniform(0.5, 200.0, n), np.inf),
        "phase": rng.uniform(0, 2 * np.pi, n),
    })
    if config.flat_spectra:
        frame = frame.assign(alpha=0.0, beta=0.0)
    if config.moving_fraction > 0:
        frame = frame.assign(**_motions(np.random.default_rng([config.seed, 4]), n, config))
    if config.galaxy_fraction > 0:
        frame = frame.assign(**_shapes(np.random.default_rng([config.seed, 5]), n, config))
    return frame.assign(catalogued=frame["f0_ujy"] >= config.uncatalogued_below_ujy)


def _motions(rng: np.random.Generator, n: int, config: SimConfig) -> dict[str, np.ndarray]:
    """Gaia-style pmra (µα*), pmdec (mas/yr), parallax (mas) and ref_epoch: a share
    ``moving_fraction`` moves, the others have none (NaN, as for Gaia's two-parameter rows)."""
    moving = rng.uniform(0, 1, n) < config.moving_fraction
    speed = np.exp(rng.uniform(np.log(20.0), np.log(config.max_proper_motion), n))
    angle = rng.uniform(0, 2 * np.pi, n)
    parallax = speed / (4.74 * rng.uniform(20.0, 80.0, n))  # mas, from km/s = 4.74 µ[mas/yr] / ϖ[mas]
    nan = np.full(n, np.nan)
    values = (np.where(moving, speed * np.sin(angle), nan), np.where(moving, speed * np.cos(angle), nan),
              np.where(moving, parallax, nan), np.full(n, config.catalog_epoch))
    return dict(zip(GAIA_MOTION, values))


def _shapes(rng: np.random.Generator, n: int, config: SimConfig) -> dict[str, np.ndarray]:
    """Tractor's type, shape_r (arcsec), shape_e1, shape_e2 and sersic: a share
    ``galaxy_fraction`` are galaxies, the others points (PSF, no shape)."""
    galaxy = rng.uniform(0, 1, n) < config.galaxy_fraction
    kind = np.where(galaxy, rng.choice(np.array(config.galaxy_types, dtype=object), n), "PSF")
    radius = np.where(galaxy, rng.uniform(*config.galaxy_radius_arcsec, n), 0.0)
    e, angle = rng.uniform(0, 0.5, n), rng.uniform(0, np.pi, n)
    elongated = galaxy & (kind != "REX")
    sersic = np.where(kind == "SER", rng.uniform(0.7, 5.0, n), np.where(kind == "DEV", 4.0, np.where(galaxy, 1.0, 0.0)))
    return {"type": kind, "shape_r": radius, "shape_e1": np.where(elongated, e * np.cos(2 * angle), 0.0),
            "shape_e2": np.where(elongated, e * np.sin(2 * angle), 0.0), "sersic": sersic}


def true_positions(sources: pd.DataFrame, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """Where ``sources`` are at ``mjd`` seen from the Earth (deg): their catalog positions
    moved along their space motion by astropy (``SkyCoord.apply_space_motion``) and shifted by
    the Earth's barycentric position (the simulator's own route, independent of the pipeline's).

    Parameters
    ----------
    sources : DataFrame
        Rows of :func:`make_catalog`.
    mjd : float

    Returns
    -------
    ra, dec : ndarray
    """
    ra, dec = sources["ra"].to_numpy(float).copy(), sources["dec"].to_numpy(float).copy()
    if "pmra" not in sources:
        return ra, dec
    moving = np.flatnonzero(sources["pmra"].notna().to_numpy())
    if not moving.size:
        return ra, dec
    rows = sources.iloc[moving]
    epoch = Time(rows["ref_epoch"].to_numpy(float), format="jyear", scale="tcb")
    star = SkyCoord(ra=ra[moving] * u.deg, dec=dec[moving] * u.deg,
                    distance=Distance(parallax=rows["parallax"].to_numpy() * u.mas),
                    pm_ra_cosdec=rows["pmra"].to_numpy() * u.mas / u.yr, pm_dec=rows["pmdec"].to_numpy() * u.mas / u.yr,
                    radial_velocity=0 * u.km / u.s, obstime=epoch, frame="icrs")
    when = Time(mjd, format="mjd", scale="utc")
    seen = star.apply_space_motion(new_obstime=when).cartesian.xyz.to_value(u.au) - \
        get_body_barycentric("earth", when).xyz.to_value(u.au)[:, None]
    ra[moving] = np.degrees(np.arctan2(seen[1], seen[0])) % 360.0
    dec[moving] = np.degrees(np.arctan2(seen[2], np.hypot(seen[0], seen[1])))
    return ra, dec


def _source_counts(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """n fluxes drawn from dN/dS ∝ S^-slope on [lo, hi] (inverse of the cumulative law)."""
    if slope == 1:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    u, k = rng.uniform(0, 1, n), 1 - slope
    return (lo**k + u * (hi**k - lo**k)) ** (1 / k)

def true_flux(sed: pd.DataFrame, wavelength_um: np.ndarray, mjd: np.ndarray) -> np.ndarray:
    """True flux density (µJy) of each SED row at its wavelength and time.

    Parameters
    ----------
    sed : DataFrame
        Rows of :func:`make_catalog` (f0_ujy, alpha, beta, amplitude, period_days, phase).
    wavelength_um : ndarray
        One wavelength (µm) per row.
    mjd : ndarray
        One time (MJD) per row.

    Returns
    -------
    ndarray
    """
    lr = np.log(np.asarray(wavelength_um, float) / 1.5)
    f = sed["f0_ujy"].to_numpy() * np.exp(sed["alpha"].to_numpy() * lr + sed["beta"].to_numpy() * lr**2)
    phase = 2 * np.pi * np.asarray(mjd) / sed["period_days"].to_numpy() + sed["phase"].to_numpy()
    vary = sed["amplitude"].to_numpy() * np.sin(phase)
    return f * (1 + vary)

def _obs_id(mjd: float, large: int, small: int) -> tuple[str, str]:
    t = Time(mjd, format="mjd").to_datetime()
    year, week, weekday = t.isocalendar()
    plan = f"{year}W{week:02d}_{1 if weekday <= 3 else 2}A"
    return plan, f"{plan}_{large:04d}_{small}"

def plan_survey(config: SimConfig, catalog: pd.DataFrame) -> list[ImageSpec]:
    """Pointings with dithers and rotations, all requested detectors, several epochs.

    Detector pairs (D1, D4), (D2, D5), (D3, D6) see the same sky; the three pairs sit side by
    side, one image width apart, as on the SPHEREx focal plane.

    Parameters
    ----------
    config : SimConfig
    catalog : DataFrame
        The sources (:func:`make_catalog`).

    Returns
    -------
    list of ImageSpec
    """
    rng = np.random.default_rng([config.seed, 2])
    n_exp = -(-config.n_images // len(config.detectors))
    width = config.size * SCALE_DEG * 1.02
    version, _ = QR_VERSIONS[config.layout]
    specs: list[ImageSpec] = []
    epoch_start: dict[int, float] = {}  # epochs half a year apart; exposures 2 min apart within one
    for e in range(n_exp):
        epoch = e % config.n_epochs
        offset = rng.uniform(0, 0.5)
        epoch_start.setdefault(epoch, MJD_START + 182.6 * epoch + offset)
        mjd = epoch_start[epoch] + (e // config.n_epochs) * 0.0014
        r = 0.5 * config.region_radius * np.sqrt(rng.uniform())
        phi = rng.uniform(0, 2 * np.pi)
        rot = rng.uniform(0, 360)
        large, small = 100 + e // 4, e % 4 + 1
        plan, obs_id = _obs_id(mjd, large, small)
        proc = Time(mjd + 30, format="mjd").to_datetime()
        tag = f"{version}-{proc.year}-{proc.timetuple().tm_yday:03d}"
        for det in config.detectors:
            if len(specs) == config.n_images:
                break
            # pair offset along the rotated y axis, centred on the requested detectors
            k = (det - 1) % 3 - 1 - np.mean([(d - 1) % 3 - 1 for d in config.detectors])
            t = np.radians(rot)
            xi = r * np.cos(phi) - k * width * np.sin(t)
            eta = r * np.sin(phi) + k * width * np.cos(t)
            ra_c, dec_c = tangent_to_sky(*config.center, np.array(xi), np.array(eta))
            ra, dec = float(ra_c), float(dec_c)
            txi, teta = sky_to_tangent(ra, dec, catalog["ra"].to_numpy(), catalog["dec"].to_numpy())
            near = np.hypot(txi, teta) < config.size * SCALE_DEG * 0.75 + 0.01
            name = f"level2_{obs_id}D{det}_spx_{tag}.fits"
            expidn = int(f"{plan[:4]}{plan[5:7]}{plan[8]}01{large:04d}{small}{det}")
            if config.cutouts == "random":
                ox, oy = rng.integers(0, channels.N_PIX - config.size + 1, 2)
                origin = (int(ox), int(oy))
            else:
                origin = (central_origin(config.size),) * 2
            # drawn only when asked for: the skies without it stay what they were
            turn = rng.uniform(0, 2 * np.pi) if config.header_offset_arcsec else 0.0
            shift = config.header_offset_arcsec / PIXEL_SCALE_ARCSEC * np.array([np.cos(turn), np.sin(turn)])
            specs.append(ImageSpec(
                index=len(specs), obs_id=obs_id, expidn=expidn, detector=det, ra=ra, dec=dec,
                rotation_deg=rot, mjd_beg=mjd, zodi_scale=float(rng.uniform(0.97, 1.03)),
                zodi_gradient=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
                relpath=f"{config.layout}/level2/{plan}/{tag}/{det}/{name}", origin=origin,
                sources=catalog.loc[near].reset_index(drop=True), header_offset=(float(shift[0]), float(shift[1])),
            ))
    return specs
