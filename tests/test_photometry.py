"""The per-image photometry kernel, against photutils and against injected truth."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.geometry import circular_overlap_grid

from spxdask import PhotometryConfig
from spxdask.photometry import measure_image
from spxdask.photometry.background import fit_zodi_scale
from spxdask.photometry.overlap import circle_weights
from spxdask.photometry.pixels import measure_pixels
from spxdask.simulate import SimConfig, make_catalog, plan_survey, render_image, simulate_sky
from spxdask.spherex import L2File
from spxdask.spherex.flags import REFERENCE_BAD_BITS, Flag
from spxdask.spherex.units import UJY_ARCSEC2_PER_MJY_SR

TRUTH_SKY = SimConfig(n_images=12, size=256, n_sources=300, seed=5, radius=0.4)


@pytest.fixture(scope="module")
def truth_sky(tmp_path_factory):
    return simulate_sky(tmp_path_factory.mktemp("truth_sky"), TRUTH_SKY, scheduler="sync")


@pytest.fixture(scope="module")
def catalog(truth_sky):
    return pd.read_csv(truth_sky.catalog)


def _pixel_area(l2):
    """Square arcsec of the linear WCS pixel (the default ``pixel_area="wcs"``)."""
    return u.Quantity(l2.wcs.proj_plane_pixel_area(), u.deg**2).to_value(u.arcsec**2)


def _measure_all(sky, catalog, config=None):
    frames = []
    for path in sky.files:
        with L2File(path) as l2:
            frames.append(measure_image(l2, catalog, config))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def measured(truth_sky, catalog):
    """Default photometry joined with truth and with the in-aperture flux of the noise-free
    sky (photutils exact on the noiseless source model at the same positions)."""
    res = _measure_all(truth_sky, catalog)
    truth = pd.read_parquet(truth_sky.truth_detections)
    noiseless = dataclasses.replace(TRUTH_SKY, noiseless=True)
    in_ap = []
    for spec in plan_survey(noiseless, make_catalog(noiseless)):
        hdul, _ = render_image(spec, noiseless)
        model = hdul["IMAGE"].data - spec.zodi_scale * hdul["ZODI"].data
        rows = res[res["filename"] == spec.relpath.rsplit("/", 1)[1]]
        if rows.empty:
            continue
        ap = CircularAperture(np.column_stack([rows.x, rows.y]), rows.aperture_radius.iloc[0])
        total = aperture_photometry(model, ap, method="exact")["aperture_sum"].data
        with L2File(truth_sky.archive / spec.relpath) as l2:
            area = _pixel_area(l2)
        in_ap.append(pd.DataFrame({"targetid": rows.targetid.to_numpy(), "filename": rows.filename.to_numpy(),
                                   "flux_in_aperture": total * area * UJY_ARCSEC2_PER_MJY_SR}))
    return res.merge(truth, on=["targetid", "filename"], suffixes=("", "_true")).merge(
        pd.concat(in_ap), on=["targetid", "filename"])


def test_every_source_in_an_image_gets_a_row(measured, truth_sky):
    truth = pd.read_parquet(truth_sky.truth_detections)
    assert len(measured) == len(truth)
    # positions come from the SIP WCS: equal to the injected ones
    assert np.max(np.hypot(measured.x - measured.x_true, measured.y - measured.y_true)) < 1e-6
    np.testing.assert_allclose(measured.wavelength, measured.wavelength_true, rtol=0, atol=1e-9)


def test_bright_sources_recover_injected_flux(measured):
    good = measured[measured.quality == ""]
    bright = good[good.flux_total / good.flux_total_error > 50]
    assert len(bright) > 100
    assert abs(np.median(bright.flux_total / bright.flux_true - 1)) < 0.005
    assert abs(np.median(bright.flux / bright.flux_in_aperture - 1)) < 0.005
    # the raw ~1 px aperture misses a position-dependent part of the light
    assert bright.aperture_correction.min() > 1.05
    assert bright.aperture_correction.std() > 0.01


def test_pull_distribution(measured):
    good = measured[measured.quality == ""]
    pull = (good.flux - good.flux_in_aperture) / good.flux_error
    assert len(pull) > 300
    # 0.91: the errors are ~9 % larger than the scatter (the local background's error counted
    # in full); too-small errors (a variance term lost) would push it above 1
    assert 0.85 <= np.std(pull) <= 1.0
    assert abs(np.median(pull)) < 0.2


def test_magnitudes(measured):
    pos = measured[measured.flux > 0]
    np.testing.assert_allclose(pos.mag_ab, 23.9 - 2.5 * np.log10(pos.flux), atol=1e-4)
    assert measured.loc[measured.flux <= 0, "mag_ab"].isna().all()


@pytest.mark.parametrize("r, m", [(0.3, 1), (1.0, 1), (1.016, 2), (2.7, 3)])
def test_circle_weights_are_photutils_exact_overlaps(r, m):
    rng = np.random.default_rng(4)
    dx, dy = rng.uniform(-0.5, 0.5, 300), rng.uniform(-0.5, 0.5, 300)
    dx[:4], dy[:4] = [0, 0.5, -0.5, 0], [0, 0, 0.5, -0.5]  # centred, and on pixel edges
    w = circle_weights(dx, dy, r, m)
    n = 2 * m + 1
    for i in range(dx.size):
        exact = circular_overlap_grid(-m - 0.5 - dx[i], m + 0.5 - dx[i], -m - 0.5 - dy[i], m + 0.5 - dy[i], n, n, r, 1, 1)
        np.testing.assert_allclose(w[i], exact, rtol=0, atol=1e-11)
    np.testing.assert_allclose(w.sum(axis=(1, 2)), np.pi * r * r, rtol=1e-12)


def test_aperture_sums_equal_photutils_exact(truth_sky, catalog):
    config = PhotometryConfig()
    for path in truth_sky.files[:4]:
        with L2File(path) as l2:
            res = measure_image(l2, catalog, config)
            bad = ((l2.flags() & config.bad_mask) != 0) | ~np.isfinite(l2.image()) | ~np.isfinite(l2.variance())
            data = np.where(bad, 0, l2.image() - np.float32(res.zodi_scale.iloc[0]) * l2.zodi())
            err = np.sqrt(np.where(bad, 0, l2.variance()))
            area = _pixel_area(l2) * UJY_ARCSEC2_PER_MJY_SR
        ap = CircularAperture(np.column_stack([res.x, res.y]), res.aperture_radius.iloc[0])
        ph = aperture_photometry(data, ap, error=err, mask=bad, method="exact")
        overlap = ap.area_overlap(data, mask=bad)
        expected = (ph["aperture_sum"].data - res.bg_level / UJY_ARCSEC2_PER_MJY_SR * overlap) * area
        ok = res.bg_level.notna() & (np.abs(expected) > 1)
        np.testing.assert_allclose(res.flux[ok], expected[ok], rtol=1e-6)
        # without the background term the error is sqrt(sum of overlap * variance)
        bg_term = res.bg_error / UJY_ARCSEC2_PER_MJY_SR * np.pi * res.aperture_radius**2 * area
        np.testing.assert_allclose(np.sqrt(res.flux_error**2 - bg_term**2)[ok], (ph["aperture_sum_err"].data * area)[ok],
                                   rtol=1e-6)


def test_targetids_keep_their_type(truth_sky, catalog):
    assert catalog.targetid.dtype == np.int64
    with L2File(truth_sky.files[0]) as l2:
        res = measure_image(l2, catalog)
        assert res.targetid.dtype == np.int64
        assert set(res.targetid) <= set(catalog.targetid)
        strings = catalog.assign(targetid="gal-" + catalog.targetid.astype(str))
        res_s = measure_image(l2, strings)
    assert (res_s.targetid == "gal-" + res.targetid.astype(str)).all()


# -- every config field does what it says ------------------------------------------------------
@pytest.fixture(scope="module")
def one_image(truth_sky, catalog):
    def run(**kwargs):
        with L2File(truth_sky.files[1]) as l2:
            return measure_image(l2, catalog, PhotometryConfig(**kwargs))
    return run


def test_zodi_subtraction_and_its_bounds(one_image, measured):
    # the fitted scale is the injected one (0.97-1.03 per image): to ~7e-4 on these images
    injected = {Path(s.relpath).name: s.zodi_scale for s in plan_survey(TRUTH_SKY, make_catalog(TRUTH_SKY))}
    fitted = measured.groupby("filename").zodi_scale.first()
    assert len(fitted) == TRUTH_SKY.n_images
    np.testing.assert_allclose(fitted, fitted.index.map(injected), rtol=0, atol=2e-3)
    base = one_image()
    off = one_image(subtract_zodi=False)
    assert (off.zodi_scale == 0).all()
    # without zodi subtraction the local background carries the zodi light, the flux does not
    assert (off.bg_level - base.bg_level).median() > 1.0
    bright = base.flux > 1000
    np.testing.assert_allclose(off.flux[bright], base.flux[bright], rtol=0.02)
    assert (one_image(zodi_scale_max=0.5).zodi_scale == 0.5).all()
    assert (one_image(zodi_scale_min=2.0, zodi_scale_max=3.0).zodi_scale == 2.0).all()


def test_background_methods(one_image):
    ann = one_image()
    win = one_image(background_method="window", window_size=50)
    small = one_image(background_method="window", window_size=(12, 20))
    bright = (ann.flux > 1000) & (ann.quality == "")
    np.testing.assert_allclose(win.flux[bright], ann.flux[bright], rtol=0.03)
    # more background pixels, smaller background error
    assert win.bg_error.median() < small.bg_error.median() < ann.bg_error.median() * 1.5
    assert win.bg_error.median() < 0.5 * ann.bg_error.median()


def test_annulus_fields(one_image):
    base = one_image()
    bigger = one_image(min_annulus_area=60, max_outer_radius=8.0)
    assert bigger.bg_error.median() < base.bg_error.median()
    none = one_image(min_usable_pixels=100000)
    assert none.quality.str.contains("no_background").all() and none.flux.isna().all()
    clipped = one_image(bg_sigma_clip_sigma=1.0)
    assert clipped.bg_error.median() < base.bg_error.median()


def test_aperture_fields(one_image):
    base = one_image()
    fixed = one_image(aperture_method="fixed", aperture_diameter=5.0)
    assert (fixed.aperture_radius == 2.5).all()
    # the reference's fwhm rule: PSF_FWHM / pixel scale x multiplier / 2 (~1.0 px here)
    fwhm = {1: 4.9, 2: 5.0, 3: 5.2, 4: 5.6, 5: 6.0, 6: 6.3}[int(base.detector.iloc[0])]
    assert base.aperture_radius.iloc[0] == pytest.approx(fwhm / 6.15 * 2.5 / 2, rel=1e-3)
    wide = one_image(fwhm_multiplier=5.0)
    assert wide.aperture_radius.iloc[0] == pytest.approx(2 * base.aperture_radius.iloc[0])
    # bigger apertures need smaller corrections and agree on the total flux
    assert fixed.aperture_correction.median() < base.aperture_correction.median()
    bright = (base.flux > 2000) & (base.quality == "") & (fixed.quality == "")
    np.testing.assert_allclose(fixed.flux_total[bright], base.flux_total[bright], rtol=0.03)


def test_bad_flags_and_pixel_area(one_image, truth_sky, catalog, tmp_path):
    base = one_image()
    # one of the default bad bits set on the brightest source's central pixel, in a copy
    bright = base.loc[base.flux.idxmax()]
    copy = tmp_path / truth_sky.files[1].name
    shutil.copy2(truth_sky.files[1], copy)
    with fits.open(copy, mode="update") as h:
        h["FLAGS"].data[round(bright.y), round(bright.x)] |= 1 << REFERENCE_BAD_BITS[0]

    def measured(**kwargs):
        with L2File(copy) as l2:
            return measure_image(l2, catalog, PhotometryConfig(**kwargs)).set_index("targetid")

    flagged, kept = measured(), measured(bad_flags=[])
    assert flagged.loc[bright.targetid, "n_bad"] == base.n_bad[base.targetid == bright.targetid].iloc[0] + 1
    assert "bad_pixels" in flagged.loc[bright.targetid, "quality"]
    # with no bad bits the flag is ignored: nothing counted, the flux as before (the zodi fit's
    # pixel set aside, which moves it by ~1e-7)
    assert (kept.n_bad == 0).all() and kept.loc[bright.targetid, "flux"] == pytest.approx(bright.flux, rel=1e-5)
    local = one_image(pixel_area="local")
    ratio = (local.flux / base.flux)[base.flux.abs() > 100]
    assert np.all(np.abs(ratio - 1) < 0.01) and ratio.std() > 0


@pytest.mark.parametrize("kwargs, field", [
    ({"aperture_method": "psf"}, "aperture_method"),
    ({"background_method": "median"}, "background_method"),
    ({"window_size": (0, 4)}, "window_size"),
    ({"zodi_scale_min": 2, "zodi_scale_max": 1}, "zodi_scale_max"),
    ({"min_usable_pixels": 0}, "min_usable_pixels"),
    ({"bad_flags": [40]}, "bad_flags"),
    ({"aperture_diameter": -1}, "aperture_diameter"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"PhotometryConfig.{field}"):
        PhotometryConfig(**kwargs)


def test_edge_and_bad_pixel_sources_are_kept_with_a_reason(truth_sky, catalog):
    res = _measure_all(truth_sky, catalog)
    assert res.quality.str.contains("edge").any()
    edge = res[res.quality.str.contains("edge")]
    assert np.all((edge.x < edge.aperture_radius) | (edge.x > 255 - edge.aperture_radius - 1)
                  | (edge.y < edge.aperture_radius) | (edge.y > 255 - edge.aperture_radius - 1))
    assert (res.n_bad > 0).sum() == res.quality.str.contains("bad_pixels").sum()


def test_qr3_files_measure_alike(sky_qr3):
    cat = pd.read_csv(sky_qr3.catalog)
    truth = pd.read_parquet(sky_qr3.truth_detections)
    res = _measure_all(sky_qr3, cat).merge(truth, on=["targetid", "filename"])
    good = res[(res.quality == "") & (res.flux_total / res.flux_total_error > 50)]
    assert len(good) > 20
    assert abs(np.median(good.flux_total / good.flux_true - 1)) < 0.01


# -- the compiled background loops, against the libraries they replace --------------------------
def test_local_background_equals_astropy_sigma_clipping(truth_sky, catalog):
    config = PhotometryConfig(bg_sigma_clip_sigma=2.0)
    with L2File(truth_sky.files[2]) as l2:
        image, zodi, flags = l2.image(), l2.zodi(), l2.flags()
        x, y = l2.wcs.all_world2pix(catalog.ra, catalog.dec, 0)
        inner = (x > 10) & (x < 245) & (y > 10) & (y < 245)
        x, y = x[inner][:80], y[inner][:80]
        pix = measure_pixels(l2.raw("IMAGE"), l2.raw("ZODI"), l2.raw("VARIANCE"), l2.raw("FLAGS"), 0.9, x, y,
                             1.0, 1, config)
        level, error, used_source = pix.bg, pix.bg_error, pix.bg_used_source
    # the first annulus (r_in = 1 + 1.414, area 10 px^2) without masked or SOURCE pixels
    r_in = 1.0 + config.annulus_inner_offset
    r_out = np.sqrt(r_in**2 + config.min_annulus_area / np.pi)
    yy, xx = np.mgrid[:256, :256]
    checked = 0
    for i in range(x.size):
        d2 = (xx - x[i]) ** 2 + (yy - y[i]) ** 2
        use = (d2 >= r_in**2) & (d2 < r_out**2) & ((flags & (config.bad_mask | Flag.SOURCE)) == 0)
        if use.sum() < config.min_usable_pixels:
            continue
        values = (image - np.float32(0.9) * zodi)[use]
        _, median, std = sigma_clipped_stats(values, sigma=2.0, maxiters=config.bg_sigma_clip_maxiters,
                                             cenfunc="mean", stdfunc="std")
        assert level[i] == pytest.approx(median, rel=1e-6)
        assert error[i] == pytest.approx(np.sqrt(np.pi / 2) * std / np.sqrt(use.sum()), rel=1e-5)
        assert not used_source[i]
        checked += 1
    assert checked > 20


def test_compiled_loops_read_any_byte_order(truth_sky, catalog):
    with L2File(truth_sky.files[0]) as l2:
        stored = [l2.raw(n) for n in ("IMAGE", "ZODI", "VARIANCE", "FLAGS")]
        x, y = l2.wcs.all_world2pix(catalog.ra, catalog.dec, 0)
        keep = (x > 0) & (x < 255) & (y > 0) & (y < 255)
        x, y = x[keep], y[keep]
    assert not stored[0].dtype.isnative  # FITS is big-endian
    native = [a.astype(a.dtype.newbyteorder("=")) for a in stored]
    image, zodi, variance, flags = stored
    scales = [fit_zodi_scale(*arrays, Flag.SOURCE, 0, 10) for arrays in (stored, native)]
    assert scales[0] == scales[1]
    # the weighted least-squares amplitude, by numpy on all usable pixels
    ok = ((flags & Flag.SOURCE) == 0) & np.isfinite(image) & (zodi != 0) & (variance > 0)
    w, z = 1 / variance[ok].astype(float), zodi[ok].astype(float)
    assert scales[0] == pytest.approx(np.sum(w * z * image[ok]) / np.sum(w * z * z), rel=1e-12)
    a = measure_pixels(*stored, scales[0], x, y, 1.0, 1, PhotometryConfig())
    b = measure_pixels(*native, scales[0], x, y, 1.0, 1, PhotometryConfig())
    for got, want in zip(a, b):
        np.testing.assert_array_equal(got, want)
