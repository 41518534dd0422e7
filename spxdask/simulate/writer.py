"""One simulated L2 file: its HDUs as the real files carry them (TAN-SIP WCS with the 'A' and
'W' alternates, IMAGE / FLAGS / VARIANCE / ZODI, the PSF cube or ePSF table, WCS-WAVE), its
pixels (sources, zodiacal light, noise drawn from VARIANCE, flagged artefacts) and its truth
rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from .._io import atomic_path
from ..geometry import tangent_to_sky
from ..spherex import channels, flags
from ..spherex.flags import Flag
from ..spherex.format import DETECTOR_CENTRE, ELAPSED_S, EPSF, EXPOSURE_S, FLAGS, IMAGE, PSF, VARIANCE, WCS_WAVE, ZODI
from ..spherex.units import UJY_ARCSEC2_PER_MJY_SR, pixel_area_arcsec2
from ..spherex.wave import wave_lookup, wave_map
from .config import ERRATUM_VERSION, QR_VERSIONS, SCALE_DEG, SimConfig
from .models import PSF_FWHM_ARCSEC, psf_pixels, psf_sigma, render_galaxies, render_stamps, wave_table, zodi_model, zone_grid
from .sky import ImageSpec, true_flux, true_positions

# A small SIP distortion (pixels relative to CRPIX), like the real files' order-3 terms.
SIP_A = {(0, 0): -0.359, (2, 0): 4e-7, (1, 1): -3e-7, (0, 2): 2e-7, (3, 0): -2e-10, (1, 2): 1e-10}
SIP_B = {(0, 0): -1.108, (2, 0): -2e-7, (1, 1): 4e-7, (0, 2): 3e-7, (2, 1): 1.5e-10, (0, 3): -1e-10}


def _fit_inverse_sip(size: int, order: int = 3) -> tuple[dict, dict]:
    grid_u, grid_v = np.meshgrid(np.linspace(-size / 2, size / 2, 25), np.linspace(-size / 2, size / 2, 25))
    u, v = grid_u.ravel(), grid_v.ravel()
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
    centre = np.array([DETECTOR_CENTRE - ox - (size - 1) / 2, DETECTOR_CENTRE - oy - (size - 1) / 2])
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

def psf_extension(detector: int, layout: str, gradient: float = 0.0,
                  erratum: bool = False) -> fits.BinTableHDU | fits.ImageHDU:
    """The file's PSF: QR2 cube (121, 101, 101) of sub-pixel integrals (10x), or the QR3 EPSF
    table (33x33 samples at 5x of the pixel-integrated PSF), one per zone. ``erratum``: the QR2
    zone-centre cards written transposed (plane = x * ncols + y + 1), as in IRSA's PSF erratum."""
    gx, gy, wx, wy = zone_grid(detector, layout)
    sig = psf_sigma(detector, gx, gy, gradient=gradient)[:, None, None]
    if layout == "qr2":
        os_, n = 10, 101
        edges = (np.arange(n) - (n - 1) / 2 - 0.5) / os_
        lo, hi = edges, edges + 1 / os_
        cube = psf_pixels(lo[None, None, :], hi[None, None, :], lo[None, :, None], hi[None, :, None], sig)
        cube = (cube / cube.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
        hdu = fits.ImageHDU(cube, name=PSF)
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
            c = iy + 11 * ix if erratum else k  # the card of zone (ix, iy) under the erratum
            h.set(f"XCTR_{k + 1}", gx[c] + 1, f"Center of x zone ({ix}, {iy})")
            h.set(f"YCTR_{k + 1}", gy[c] + 1, f"Center of y zone ({ix}, {iy})")
            h.set(f"XWID_{k + 1}", wx, f"Width of x zone ({ix}, {iy})")
            h.set(f"YWID_{k + 1}", wy, f"Width of y zone ({ix}, {iy})")
        return hdu
    os_, n = 5, 33
    off = (np.arange(n) - (n - 1) / 2) / os_
    epsf = psf_pixels(off[None, None, :] - 0.5, off[None, None, :] + 0.5,
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
    hdu = fits.BinTableHDU.from_columns(cols, name=EPSF)
    h = hdu.header
    h["OVSMPX"], h["OVSMPY"] = os_, os_
    h["DETCOORD"] = "sky"
    h["ORDERING"] = "x-fast then y"
    h["HISTORY"] = f"Calibration source file: epsf_D{detector}_synthetic.fits"
    return hdu

def write_epsf_calibration(folder: str | Path, detectors, *, gradient: float = 0.0) -> list[Path]:
    """IRSA-style ePSF calibration files of the simulator's PSF, one per detector
    (``epsf_D<n>_spx_cal-epsf-sim.fits``: an empty primary HDU and the ``EPSF`` table QR3 files
    carry), for measuring QR2 files with the effective PSF.

    Parameters
    ----------
    folder : path
    detectors : iterable of int
    gradient : float
        The sky's ``SimConfig.psf_gradient``.

    Returns
    -------
    list of Path
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for detector in detectors:
        path = root / f"epsf_D{detector}_spx_cal-epsf-sim.fits"
        with atomic_path(path) as tmp:
            fits.HDUList([fits.PrimaryHDU(), psf_extension(detector, "qr3", gradient)]).writeto(tmp)
        written.append(path)
    return written


def render_image(spec: ImageSpec, config: SimConfig) -> tuple[fits.HDUList, pd.DataFrame]:
    """The L2 file of ``spec`` and its truth rows.

    Parameters
    ----------
    spec : ImageSpec
    config : SimConfig

    Returns
    -------
    hdul : HDUList
    truth : DataFrame
        One row per source whose centre is in the image.
    """
    rng = np.random.default_rng([config.seed, 3, spec.index])
    n = config.size
    ox, oy = spec.origin
    wcs_h = image_wcs_header(spec, n)
    wcs = WCS(wcs_h, naxis=2)
    xs_c, ys_c, values = wave_table(spec.detector, config.layout)
    axis = np.arange(n) + 1.0
    wl_map, _ = wave_map(xs_c, ys_c, values.astype(float), axis + ox, axis + oy)
    yy, xx = np.mgrid[0:n, 0:n]
    zodi = zodi_model(wl_map, xx + ox, yy + oy, spec.zodi_gradient).astype(np.float32)

    src = spec.sources
    mjd_mid = spec.mjd_beg + 0.5 * EXPOSURE_S / 86400
    # where each source is when the image is taken, and where that is on the detector: the
    # header's WCS misses it by ``spec.header_offset``
    ra_true, dec_true = true_positions(src, mjd_mid)
    x, y = wcs.all_world2pix(ra_true, dec_true, 0)
    x, y = x + spec.header_offset[0], y + spec.header_offset[1]
    inside = (x >= -0.5) & (x <= n - 0.5) & (y >= -0.5) & (y <= n - 0.5)
    near = (x > -10) & (x < n + 9) & (y > -10) & (y < n + 9)
    src, x, y, inside = src[near], x[near], y[near], inside[near]
    ra_true, dec_true = ra_true[near], dec_true[near]
    wl, bw = wave_lookup(xs_c, ys_c, values, x + ox + 1.0, y + oy + 1.0)
    flux = true_flux(src, wl, np.full(len(src), mjd_mid))
    area = pixel_area_arcsec2(wcs, x, y)
    gx, gy, _, _ = zone_grid(spec.detector, config.layout)
    zone = np.argmin((x[:, None] + ox - gx) ** 2 + (y[:, None] + oy - gy) ** 2, axis=1)
    sigma = psf_sigma(spec.detector, gx, gy, gradient=config.psf_gradient)[zone]
    model = np.zeros((n, n))
    amplitude = flux / (area * UJY_ARCSEC2_PER_MJY_SR)
    galaxy = (src["type"] != "PSF").to_numpy() if "type" in src else np.zeros(len(src), bool)
    render_stamps(model, x[~galaxy], y[~galaxy], amplitude[~galaxy], sigma[~galaxy])
    if galaxy.any():
        shapes = _galaxy_shapes(wcs, src[galaxy], ra_true[galaxy], dec_true[galaxy])
        render_galaxies(model, x[galaxy], y[galaxy], amplitude[galaxy], sigma[galaxy], shapes)

    variance = (config.read_noise**2 + 2e-4 * (model + zodi)).astype(np.float32)
    image = model + spec.zodi_scale * zodi
    flag = np.zeros((n, n), np.int32)
    flag[model > 0.5 * config.read_noise] |= Flag.SOURCE
    if not config.noiseless:
        image = image + rng.standard_normal((n, n)) * np.sqrt(variance)
        if config.artefacts:
            _add_artefacts(rng, image, variance, flag, spec.detector, config.hot_fraction)
    primary = fits.PrimaryHDU()
    primary.header["VERSION"] = ERRATUM_VERSION if config.psf_erratum else QR_VERSIONS[config.layout][1]
    median_area = float(np.median(pixel_area_arcsec2(wcs, xx[::16, ::16].ravel(), yy[::16, ::16].ravel())))
    common = _common_header(spec, wcs_h, area=median_area)
    hdus = [primary,
            _image_hdu(IMAGE, image.astype(np.float32), "MJy / sr", common, flag),
            _flags_hdu(flag, common, config.layout),
            _image_hdu(VARIANCE, variance, "MJy2 / sr2", common),
            _image_hdu(ZODI, zodi, "MJy / sr", common),
            psf_extension(spec.detector, config.layout, config.psf_gradient, config.psf_erratum),
            _wave_hdu(xs_c, ys_c, values)]
    truth = pd.DataFrame({
        "targetid": src["targetid"].to_numpy(), "obs_id": spec.obs_id, "detector": spec.detector,
        "filename": Path(spec.relpath).name, "mjd": mjd_mid, "x": x, "y": y,
        "wavelength": wl, "bandwidth": bw, "flux_true": flux, "psf_sigma": sigma,
        "pixel_area": area,
    })[inside]
    return fits.HDUList(hdus), truth.reset_index(drop=True)

def _galaxy_shapes(wcs: WCS, rows: pd.DataFrame, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Per galaxy: Sérsic index and the map (row-major 2 x 2) from the unit circle in
    half-light radii (major, minor axis) to native pixel offsets, through ``wcs`` at (ra, dec):
    the major axis at ½ atan2(e2, e1) from East towards North, axis ratio ``(1 - |e|) / (1 + |e|)``."""
    step = 1.0 / 3600  # deg
    x0, y0 = wcs.all_world2pix(ra, dec, 0)
    xe, ye = wcs.all_world2pix(ra + step / np.cos(np.radians(dec)), dec, 0)
    xn, yn = wcs.all_world2pix(ra, dec + step, 0)
    per_arcsec = np.stack([np.stack([xe - x0, xn - x0], -1), np.stack([ye - y0, yn - y0], -1)], -2)
    e1, e2 = rows["shape_e1"].to_numpy(float), rows["shape_e2"].to_numpy(float)
    e, theta = np.hypot(e1, e2), 0.5 * np.arctan2(e2, e1)
    r_e = rows["shape_r"].to_numpy(float)
    axes = np.zeros((len(rows), 2, 2))
    axes[:, 0, 0], axes[:, 1, 0] = r_e * np.cos(theta), r_e * np.sin(theta)  # East, North of the major axis
    minor = r_e * (1 - e) / (1 + e)
    axes[:, 0, 1], axes[:, 1, 1] = -minor * np.sin(theta), minor * np.cos(theta)
    mapping = per_arcsec @ axes
    return np.column_stack([rows["sersic"].to_numpy(float), mapping.reshape(len(rows), 4)])


def _add_artefacts(rng, image, variance, flag, detector, hot_fraction) -> None:
    n = image.shape[0]
    npix = n * n

    def pick(rate):
        k = max(1, int(rng.poisson(rate * npix)))
        return rng.integers(0, n, k), rng.integers(0, n, k)

    yy, xx = pick(hot_fraction)
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
    exptime = EXPOSURE_S
    for key, mjd in (("BEG", spec.mjd_beg), ("AVG", spec.mjd_beg + exptime / 2 / 86400),
                     ("END", spec.mjd_beg + exptime / 86400)):
        iso = Time(mjd, format="mjd", scale="utc").isot
        if key == "BEG":
            h["DATE-OBS"], h["MJD-OBS"] = iso, mjd
        h[f"DATE-{key}"], h[f"MJD-{key}"] = iso, mjd
    h.set("XPOSURE", exptime, "[s] exposure time")
    h.set("TELAPSE", ELAPSED_S, "[s] elapsed time, starts before MJD-BEG")
    h.set("PSF_FWHM", PSF_FWHM_ARCSEC[spec.detector], "[arcsec] median PSF FWHM")
    h.set("HIERARCH OMEGA_MEDIAN", round(area, 4), "[arcsec2] median pixel solid angle")
    h.set("HIERARCH OMEGA_STDDEV", 0.01, "[arcsec2]")
    h["DETCOORD"] = "sky"
    h["L2DQAFLG"] = "Pass"
    h.set("HIERARCH SPS_FLAGS", "all_sky")
    h.extend(wcs_h)
    h["HISTORY"] = "Synthetic SPHEREx L2 image written by spxdask.simulate"
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
        hdu = fits.CompImageHDU(flag, name=FLAGS, compression_type="RICE_1", tile_shape=(1, flag.shape[1]))
        for key, name, comment in flags.qr3_header_cards():
            hdu.header.set(key, name, comment[:36])
    else:
        hdu = fits.ImageHDU(flag, name=FLAGS)
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
    return fits.BinTableHDU.from_columns(cols, name=WCS_WAVE)

def write_image(spec: ImageSpec, config: SimConfig, archive_dir: Path) -> pd.DataFrame:
    """Render one image and write it atomically under ``archive_dir``.

    Parameters
    ----------
    spec : ImageSpec
    config : SimConfig
    archive_dir : Path
        The archive's root (the file goes to ``spec.relpath`` under it).

    Returns
    -------
    DataFrame
        Its truth rows.
    """
    hdul, truth = render_image(spec, config)
    path = Path(archive_dir) / spec.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        hdul.writeto(tmp)
    return truth
