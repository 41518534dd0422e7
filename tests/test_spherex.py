"""The L2 file model and the simulator, checked field by field and against injected truth."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry

from spxdask.geometry import sky_to_tangent
from spxdask.simulate import (
    SimConfig,
    make_catalog,
    plan_survey,
    psf_pixels,
    psf_sigma,
    render_image,
    simulate_sky,
    wave_table,
    write_image,
)
from spxdask.spherex import Flag, L2File, L2FormatError, channels, flags, read_footprint
from spxdask.spherex.units import UJY_ARCSEC2_PER_MJY_SR, pixel_area_arcsec2
from spxdask.spherex.wave import wave_lookup
from spxdask.testing.http_server import FileServer

from .conftest import SMALL_QR2, SMALL_QR3


def test_channel_table_is_the_real_one():
    t = channels.channel_table()
    assert len(t) == 102
    assert (t.groupby("detector").size() == 17).all()
    assert np.all(np.diff(t["wavelength"]) > 0)
    assert t["wavelength"].iloc[0] == pytest.approx(0.753)
    assert t["wavelength"].iloc[-1] == pytest.approx(4.982)
    # bandwidth = wavelength / R to the 3 digits printed in the calibration file
    assert np.allclose(t["bandwidth"], t["wavelength"] / t["r"], rtol=0.06, atol=1e-3)


@pytest.mark.parametrize("text", ["3", 3, "D3", "d3", "SPHEREx-D3"])
def test_parse_band(text):
    assert channels.parse_band(text) == 3


def test_parse_band_rejects_unknown():
    with pytest.raises(ValueError, match="D7"):
        channels.parse_band("D7")


def test_flag_bits_match_reference_and_headers(sky_qr2, sky_qr3):
    assert int(flags.mask_from_bits(flags.REFERENCE_BAD_BITS)) == 708295  # spxquery 0.4.1
    assert Flag.SOURCE == 1 << 21 and not flags.DEFAULT_BAD & Flag.SOURCE
    for sky in (sky_qr2, sky_qr3):
        with fits.open(sky.files[0]) as h:
            from_header = flags.bits_from_header(h["FLAGS"].header)
        expected = {f.name: f.value.bit_length() - 1 for f in Flag}
        if sky is sky_qr2:
            expected = {k: v for k, v in expected.items() if Flag(1 << v) not in flags.QR3_ONLY}
        assert from_header == expected
    assert flags.names(int(Flag.HOT | Flag.SOURCE)) == ["HOT", "SOURCE"]


@pytest.mark.parametrize("layout", ["qr2", "qr3"])
def test_reader_fields_equal_what_was_written(layout, tmp_path):
    cfg = SMALL_QR2 if layout == "qr2" else SMALL_QR3
    spec = plan_survey(cfg, make_catalog(cfg))[2]
    hdul, _ = render_image(spec, cfg)
    write_image(spec, cfg, tmp_path)
    with L2File(tmp_path / spec.relpath) as f:
        assert f.layout == layout
        assert f.shape == (cfg.size, cfg.size)
        m = f.meta
        assert (m.obs_id, m.detector, m.band) == (spec.obs_id, spec.detector, f"D{spec.detector}")
        assert m.mjd_beg == spec.mjd_beg and m.mjd_beg < m.mjd_avg < m.mjd_end
        assert m.mjd == pytest.approx(0.5 * (m.mjd_beg + m.mjd_end))
        assert m.exptime == pytest.approx(113.5826)
        assert m.psf_fwhm > 4 and 37 < m.omega_median < 38.5
        assert m.version.startswith("6.5" if layout == "qr2" else "7.0")
        for name, read in (("IMAGE", f.image), ("FLAGS", f.flags), ("VARIANCE", f.variance), ("ZODI", f.zodi)):
            full = read()
            assert full.dtype.isnative
            np.testing.assert_array_equal(full, hdul[name].data)
            sec = (slice(10, 40), slice(100, 131))
            np.testing.assert_array_equal(read(section=sec), full[sec])
        assert hdul["IMAGE"].header["BUNIT"] == "MJy / sr"
        assert hdul["VARIANCE"].header["BUNIT"] == "MJy2 / sr2"
        # NaN variance only on flagged pixels
        bad_var = ~np.isfinite(f.variance())
        assert bad_var.any() and np.all(f.flags()[bad_var] != 0)
        assert np.all(f.flags()[~np.isfinite(f.image())] != 0)
        assert f.wcs.sip is not None and f.wcs.wcs.ctype[0] == "RA---TAN-SIP"
    if layout == "qr3":
        assert isinstance(hdul["FLAGS"], fits.CompImageHDU)
        assert hdul["FLAGS"].compression_type == "RICE_1"
        assert len(hdul["EPSF"].data) == (451 if spec.detector == 3 else 441)


def _jacobian_area_arcsec2(wcs, x, y, h=1e-3):
    """|det J| of ``all_pix2world`` by central differences (RA scaled by cos dec), arcsec^2."""
    ra, dec = np.radians(wcs.all_pix2world(np.concatenate([x + h, x - h, x, x]), np.concatenate([y, y, y + h, y - h]), 0))
    n, c = x.size, np.cos(np.radians(wcs.all_pix2world(x, y, 0)[1]))
    dra_dx, dra_dy = (ra[:n] - ra[n:2 * n]) * c / (2 * h), (ra[2 * n:3 * n] - ra[3 * n:]) * c / (2 * h)
    ddec_dx, ddec_dy = (dec[:n] - dec[n:2 * n]) / (2 * h), (dec[2 * n:3 * n] - dec[3 * n:]) / (2 * h)
    return np.abs(dra_dx * ddec_dy - dra_dy * ddec_dx) * (180 / np.pi * 3600) ** 2


@pytest.mark.parametrize("det", channels.DETECTORS)
def test_fast_wavelength_and_pixel_area_agree_with_astropy(det, tmp_path):
    # a full-size frame, so the whole control grid is exercised
    cfg = SimConfig(n_images=1, size=2040, n_sources=5, detectors=(det,), noiseless=True)
    spec = plan_survey(cfg, make_catalog(cfg))[0]
    write_image(spec, cfg, tmp_path)
    with L2File(tmp_path / spec.relpath) as f:
        rng = np.random.default_rng(det)
        x = np.concatenate([rng.uniform(0, 2039, 3000), [0, 2039, 0, 2039]])
        y = np.concatenate([rng.uniform(0, 2039, 3000), [0, 0, 2039, 2039]])
        wl, bw = f.wavelength(x, y)
        ref_wl, ref_bw = f.spectral_wcs().pixel_to_world(x, y)
        assert np.max(np.abs(wl - ref_wl.to_value("um"))) < 1e-6
        assert np.max(np.abs(bw - ref_bw.to_value("um"))) < 1e-6
        # the solid angle the simulator injects with and photometry converts back with, against
        # astropy's mapping differentiated numerically (the SIP terms matter at the corners)
        np.testing.assert_allclose(pixel_area_arcsec2(f.wcs, x, y), _jacobian_area_arcsec2(f.wcs, x, y), rtol=1e-6)
        sec = (slice(100, 2040, 97), slice(3, 2040, 101))
        wl_map, bw_map = f.wavelength_map(section=sec)
        yy, xx = np.mgrid[sec]
        ref_wl, ref_bw = f.spectral_wcs().pixel_to_world(xx, yy)
        assert np.max(np.abs(wl_map - ref_wl.to_value("um"))) < 1e-6
        assert np.max(np.abs(bw_map - ref_bw.to_value("um"))) < 1e-6
        d = channels.detector(det)
        # longest wavelength on the first row, falling with row
        assert wl[-4] == pytest.approx(d.wave_top_um, rel=1e-3)
        assert f.wavelength(1020, 2039)[0] == pytest.approx(d.wave_bottom_um, rel=1e-3)


def test_celestial_wcs_equals_astropy_on_the_whole_header(sky_qr2):
    with L2File(sky_qr2.files[0]) as f:
        full = WCS(f.header, naxis=2)
        assert f.wcs.sip is not None and f.wcs.wcs.ctype[0] == "RA---TAN-SIP"
        rng = np.random.default_rng(1)
        x, y = rng.uniform(-10, 265, 500), rng.uniform(-10, 265, 500)
        np.testing.assert_array_equal(f.wcs.all_pix2world(x, y, 0), full.all_pix2world(x, y, 0))
        ra, dec = full.all_pix2world(x, y, 0)
        np.testing.assert_allclose(f.wcs.all_world2pix(ra, dec, 0), full.all_world2pix(ra, dec, 0), atol=1e-9)


@pytest.mark.parametrize("layout", ["qr2", "qr3"])
def test_psf_stamps_are_the_injected_psf_integrated_over_pixels(layout, sky_qr2, sky_qr3):
    sky = {"qr2": sky_qr2, "qr3": sky_qr3}[layout]
    with L2File(sky.files[0]) as f:
        psf, det = f.psf, f.meta.detector
    # sources near zone centres, at random sub-pixel positions: the simulator's PSF there is
    # known exactly (two Gaussians integrated over each native pixel)
    rng = np.random.default_rng(3)
    zones = rng.choice(psf.xctr.size, 200)
    x = np.round(psf.xctr[zones]) + rng.uniform(-0.5, 0.5, zones.size)
    y = np.round(psf.yctr[zones]) + rng.uniform(-0.5, 0.5, zones.size)
    m = 3
    stamps = psf.stamps(x, y, m)
    np.testing.assert_array_equal(psf.zone(x, y), zones)
    offs = np.arange(-m, m + 1)
    dx, dy = (x - np.round(x))[:, None, None], (y - np.round(y))[:, None, None]
    sigma = psf_sigma(det, psf.xctr[zones], psf.yctr[zones])[:, None, None]
    truth = psf_pixels(offs[None, None, :] - 0.5 - dx, offs[None, None, :] + 0.5 - dx,
                        offs[None, :, None] - 0.5 - dy, offs[None, :, None] + 0.5 - dy, sigma)
    # per pixel: the models' resolution (QR2 10x sub-pixel integrals, their cumulative
    # interpolated bicubically — bilinear was off by 1 % per pixel, 5e-4 over 3x3; QR3 5x
    # samples interpolated bicubically — bilinear was off by 3.6 % per pixel, 1.5e-3 over
    # 3x3); over the central 3x3 (an aperture's reach) and in total: close
    pixel, box, total = {"qr2": (1e-3, 1e-4, 1e-5), "qr3": (5e-3, 1e-3, 1e-3)}[layout]
    assert np.abs(stamps - truth).max() < pixel * truth.max()
    c = slice(m - 1, m + 2)
    np.testing.assert_allclose(stamps[:, c, c].sum(axis=(1, 2)), truth[:, c, c].sum(axis=(1, 2)), rtol=box)
    np.testing.assert_allclose(stamps.sum(axis=(1, 2)), truth.sum(axis=(1, 2)), rtol=total)


def test_small_images_are_central_cutouts_of_the_detector(sky_qr2):
    with L2File(sky_qr2.files[0]) as f:
        px, py = f.parent_pixel(np.array([0.0]), np.array([0.0]))
        assert (px[0], py[0]) == ((2040 - 256) // 2, (2040 - 256) // 2)
        wl_cut = f.wavelength(np.array([10.0]), np.array([20.0]))[0]
    xs, ys, values = wave_table(f.meta.detector, "qr2")
    # 1-based parent coordinates of file pixel (10, 20)
    assert wl_cut[0] == pytest.approx(wave_lookup(xs, ys, values, px + 11, py + 21)[0][0])
    # the cut-out's own WAVE-TAB as astropy reads it: the same wavelengths everywhere
    with L2File(sky_qr2.files[0]) as f:
        rng = np.random.default_rng(2)
        x, y = rng.uniform(-0.5, 255.5, 2000), rng.uniform(-0.5, 255.5, 2000)
        wl, bw = f.wavelength(x, y)
        ref_wl, ref_bw = f.spectral_wcs().pixel_to_world(x, y)
    np.testing.assert_allclose(wl, ref_wl.to_value("um"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(bw, ref_bw.to_value("um"), rtol=0, atol=1e-6)


def test_footprint_is_the_pixel_edge_polygon(sky_qr2):
    with L2File(sky_qr2.files[1]) as f:
        fp = f.footprint()
        ny, nx = f.shape
        ra, dec = f.wcs.all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
        np.testing.assert_allclose(fp, np.column_stack([ra, dec]), rtol=0, atol=1e-12)
        words = f.s_region().split()
        assert words[:2] == ["POLYGON", "ICRS"] and len(words) == 12 and words[2:4] == words[10:12]
        # the edges are ~256 * 6.15" long and the polygon is convex around the centre
        cra, cdec = f.wcs.all_pix2world(nx / 2, ny / 2, 0)
        xi, eta = sky_to_tangent(float(cra), float(cdec), fp[:, 0], fp[:, 1])
        side = np.hypot(np.diff(np.append(xi, xi[0])), np.diff(np.append(eta, eta[0]))) * 3600
        assert np.allclose(side, 256 * 6.15, rtol=0.01)
        cross = (np.roll(xi, -1) - xi) * -eta - (np.roll(eta, -1) - eta) * -xi
        assert np.all(cross > 0) or np.all(cross < 0)


def test_truth_tables_and_catalog(sky_qr2):
    cat = pd.read_csv(sky_qr2.catalog)
    assert list(cat.columns) == ["targetid", "ra", "dec"]
    assert cat["targetid"].dtype == np.int64 and cat["targetid"].is_unique
    assert (cat["targetid"] > 10**16).all()
    # some ids differ by one in the last digit: float64 cannot keep them apart
    ids = np.sort(cat["targetid"].to_numpy())
    assert np.any(np.diff(ids) == 1)
    assert len(np.unique(ids.astype(float))) < len(ids)
    det = pd.read_parquet(sky_qr2.truth_detections)
    assert set(det["targetid"]) <= set(cat["targetid"])
    assert det.groupby("targetid").size().max() >= 3  # sources are seen several times
    assert set(det["detector"]) == set(channels.DETECTORS)
    for name in det["filename"].unique()[:3]:
        path = next(p for p in sky_qr2.files if p.name == name)
        rows = det[det["filename"] == name]
        with L2File(path) as f:
            wl, _ = f.wavelength(rows["x"].to_numpy(), rows["y"].to_numpy())
        np.testing.assert_allclose(rows["wavelength"], wl, rtol=1e-12)


def test_files_follow_irsa_layout(sky_qr2):
    rel = sky_qr2.files[0].relative_to(sky_qr2.archive).parts
    assert rel[0] == "qr2" and rel[1] == "level2" and rel[3].startswith("l2b-v21-")
    assert rel[5] == f"level2_{rel[2]}_0100_1D{rel[4]}_spx_{rel[3]}.fits"


def test_simulation_is_deterministic(tmp_path):
    cfg = SimConfig(n_images=2, size=64, n_sources=30, seed=11)
    a = simulate_sky(tmp_path / "a", cfg, scheduler="sync")
    b = simulate_sky(tmp_path / "b", cfg, scheduler="sync")
    for fa, fb in zip(a.files, b.files):
        with L2File(fa) as x, L2File(fb) as y:
            np.testing.assert_array_equal(x.image(), y.image())
    pd.testing.assert_frame_equal(pd.read_parquet(a.truth_detections), pd.read_parquet(b.truth_detections))


@pytest.mark.parametrize("noiseless", [True, False])
def test_big_aperture_recovers_injected_flux(noiseless, tmp_path):
    cfg = dataclasses.replace(SMALL_QR2, n_images=3, noiseless=noiseless, flux_range_ujy=(3000, 30000))
    catalog = make_catalog(cfg)
    specs = plan_survey(cfg, catalog)
    ratios = []
    for spec in specs:
        hdul, truth = render_image(spec, cfg)
        n = cfg.size
        sep = np.hypot(truth.x.to_numpy()[:, None] - truth.x.to_numpy(), truth.y.to_numpy()[:, None] - truth.y.to_numpy())
        isolated = np.sort(sep, axis=1)[:, 1] > 14 if len(truth) > 1 else np.ones(len(truth), bool)
        truth = truth[isolated & (truth.x > 15) & (truth.x < n - 16) & (truth.y > 15) & (truth.y < n - 16)]
        image = hdul["IMAGE"].data - spec.zodi_scale * hdul["ZODI"].data
        bad = (hdul["FLAGS"].data & int(flags.DEFAULT_BAD)) != 0
        pos = np.column_stack([truth.x, truth.y])
        if not noiseless:  # a local annulus background, as a user would do
            bkg = aperture_photometry(np.where(bad, 0, image), CircularAnnulus(pos, 9, 13), mask=bad)
            area = CircularAnnulus(pos, 9, 13).area_overlap(image, mask=bad)
        phot = aperture_photometry(np.nan_to_num(image), CircularAperture(pos, 8.0), mask=bad)
        flux = phot["aperture_sum"].data
        if not noiseless:
            flux = flux - bkg["aperture_sum"].data / area * np.pi * 64
        ratios.extend(flux * truth["pixel_area"].to_numpy() * UJY_ARCSEC2_PER_MJY_SR / truth["flux_true"].to_numpy())
    ratios = np.asarray(ratios)
    assert len(ratios) > 20
    if noiseless:
        assert np.all(np.abs(ratios - 1) < 0.01)
    else:
        assert abs(np.median(ratios) - 1) < 0.01


# -- corrupt files ---------------------------------------------------------------------------
def _copy(sky, tmp_path):
    dst = tmp_path / sky.files[0].name
    shutil.copy(sky.files[0], dst)
    return dst


@pytest.mark.parametrize("layout", ["qr2", "qr3"])
def test_read_footprint_is_the_file_footprint_from_one_header(layout, sky_qr2, sky_qr3, tmp_path):
    sky = {"qr2": sky_qr2, "qr3": sky_qr3}[layout]
    for path in sky.files[:3]:
        with L2File(path) as f:
            np.testing.assert_array_equal(read_footprint(path), f.footprint())
    # the HDUs after IMAGE are never read: a file cut just after the IMAGE header still has one
    path = _copy(sky, tmp_path)
    with fits.open(path) as h:
        end = h["IMAGE"].fileinfo()["datLoc"]
    full = read_footprint(path)
    path.write_bytes(path.read_bytes()[:end])
    np.testing.assert_array_equal(read_footprint(path), full)
    with pytest.raises(L2FormatError, match="truncated|missing|not a readable"):
        L2File(path)


def test_read_footprint_names_what_is_wrong(sky_qr2, tmp_path):
    path = tmp_path / "level2_fake.fits"
    path.write_text("<html>502 Bad Gateway</html>")
    with pytest.raises(L2FormatError, match="level2_fake.fits: not a readable FITS"):
        read_footprint(path)
    path = _copy(sky_qr2, tmp_path)
    with fits.open(path) as h:
        h["IMAGE"].name = "SCI"
        h.writeto(path, overwrite=True)
    with pytest.raises(L2FormatError, match="no IMAGE HDU"):
        read_footprint(path)
    path = _copy(sky_qr2, tmp_path)
    with fits.open(path) as h:
        h["IMAGE"].header["CTYPE1"] = "RA---XYZ-SIP"
        h.writeto(path, overwrite=True)
    with pytest.raises(L2FormatError, match="unreadable IMAGE header or celestial WCS"):
        read_footprint(path)


def test_truncated_file(sky_qr2, tmp_path):
    path = _copy(sky_qr2, tmp_path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3000, 2000):
        path.write_bytes(data[:cut])
        with pytest.raises(L2FormatError, match=path.name) as err:
            L2File(path)
        assert "truncated" in str(err.value) or "missing" in str(err.value) or "not a readable" in str(err.value)


def test_not_fits(tmp_path):
    path = tmp_path / "level2_fake.fits"
    path.write_text("<html>502 Bad Gateway</html>")
    with pytest.raises(L2FormatError, match="level2_fake.fits: not a readable FITS"):
        L2File(path)


def test_missing_hdu(sky_qr2, tmp_path):
    path = _copy(sky_qr2, tmp_path)
    with fits.open(path) as h:
        del h["ZODI"]
        h.writeto(path, overwrite=True)
    with pytest.raises(L2FormatError, match="missing HDU.*ZODI"):
        L2File(path)


def test_wrong_shape(sky_qr2, tmp_path):
    path = _copy(sky_qr2, tmp_path)
    with fits.open(path) as h:
        h["VARIANCE"].data = h["VARIANCE"].data[:100]
        h.writeto(path, overwrite=True)
    with pytest.raises(L2FormatError, match="share one 2-D shape"):
        L2File(path)


def test_broken_wave_table(sky_qr2, tmp_path):
    path = _copy(sky_qr2, tmp_path)
    with fits.open(path) as h:
        h["WCS-WAVE"].data["X"][0][3] = 0
        h.writeto(path, overwrite=True)
    with L2File(path) as f, pytest.raises(L2FormatError, match="bad WCS-WAVE"):
        f.wavelength(np.array([1.0]), np.array([1.0]))


@pytest.mark.parametrize("card, value", [("CTYPE1", "RA---XYZ-SIP"), ("A_7_0", 1e-9), ("A_1_1", "big"),
                                         ("CRVAL2", "north")])
def test_broken_celestial_wcs(sky_qr2, tmp_path, card, value):
    path = _copy(sky_qr2, tmp_path)
    with fits.open(path) as h:
        h["IMAGE"].header[card] = value
        h.writeto(path, overwrite=True)
    with L2File(path) as f, pytest.raises(L2FormatError, match="bad celestial WCS"):
        f.wcs  # noqa: B018 - the property raises


def test_missing_file_is_not_a_format_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        L2File(tmp_path / "nope.fits")


# -- remote reads ----------------------------------------------------------------------------
def test_http_reads_only_what_is_asked(tmp_path):
    cfg = SimConfig(n_images=1, size=2040, n_sources=20, detectors=(2,))
    sky = simulate_sky(tmp_path, cfg, scheduler="sync")
    rel = sky.files[0].relative_to(sky.archive).as_posix()
    size = sky.files[0].stat().st_size
    with FileServer(sky.archive) as server, L2File(f"{server.url}/{rel}") as remote, L2File(sky.files[0]) as local:
        assert remote.meta == local.meta
        opened = server.bytes_sent
        sec = (slice(1000, 1064), slice(500, 564))
        np.testing.assert_array_equal(remote.flags(section=sec), local.flags(section=sec))
        np.testing.assert_array_equal(remote.image(section=sec), local.image(section=sec))
        assert opened < 0.03 * size
        assert server.bytes_sent < 0.06 * size
        np.testing.assert_allclose(remote.wavelength(5.0, 7.0), local.wavelength(5.0, 7.0))
        before = server.bytes_sent
        np.testing.assert_array_equal(read_footprint(f"{server.url}/{rel}"), read_footprint(sky.files[0]))
        assert server.bytes_sent - before < 0.01 * size
