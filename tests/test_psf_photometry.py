"""Forced PSF photometry (joint fit of all sources of an image) against injected truth:
isolated and crowded skies, error bars, PSF zones, neighbour catalogs, degenerate pairs."""

from __future__ import annotations

import dataclasses

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from scipy.spatial import cKDTree

from spxdask import PhotometryConfig
from spxdask.batch import CatalogError, load_neighbours, process_single_image, run_extraction
from spxdask.photometry import measure_image
from spxdask.photometry.psf_fit import fit_psf
from spxdask.simulate import SimConfig, psf_pixels, simulate_sky
from spxdask.spectra import SpectraConfig
from spxdask.spectra.compute import resolve
from spxdask.spherex import L2File
from spxdask.spherex.headers import psf_header_transposed
from spxdask.spherex.units import UJY_ARCSEC2_PER_MJY_SR

from .conftest import flux_and_pulls

PIX_DEG = 6.15 / 3600
#: ~1 catalogued source per 40 px² over the 512² images, fluxes down to S/N ~ 1.
CROWDED = SimConfig(n_images=2, size=512, n_sources=12000, seed=3, min_separation_arcsec=0, flux_range_ujy=(10, 30000),
                    detectors=(1,), radius=512 * 0.75 * PIX_DEG, variable_fraction=0.0)


def _measure(sky, catalog, config=None, **kw) -> pd.DataFrame:
    """Every file of ``sky`` measured, joined with truth, with each row's nearest-neighbour
    distance (px) among all injected sources of its image."""
    truth = pd.read_parquet(sky.truth_detections)
    frames = []
    for path in sky.files:
        with L2File(path) as l2:
            frames.append(measure_image(l2, catalog, config, **kw))
    res = pd.concat(frames, ignore_index=True).merge(truth, on=["targetid", "filename"], suffixes=("", "_true"))
    res["nn"] = np.nan
    for name, t in truth.groupby("filename"):
        rows = res.filename == name
        d, _ = cKDTree(t[["x", "y"]]).query(res.loc[rows, ["x", "y"]], k=2)
        res.loc[rows, "nn"] = d[:, 1]
    return res


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    sky = simulate_sky(tmp_path_factory.mktemp("crowded"), CROWDED, scheduler="sync")
    return sky, pd.read_csv(sky.catalog)


@pytest.fixture(scope="module")
def crowded_measured(crowded):
    sky, catalog = crowded
    return _measure(sky, catalog)


def test_crowded_sky_psf_fluxes_are_right_where_apertures_fail(crowded, crowded_measured):
    sky, _ = crowded
    truth = pd.read_parquet(sky.truth_detections)
    # the density of real frames: at least one source per 45 px² in every image
    assert truth.groupby("filename").size().min() >= 512**2 / 45
    res = crowded_measured
    bright = res[res.flux_true / res.flux_psf_error > 20]
    close = bright[bright.nn < 2]
    assert len(bright) > 2000 and len(close) > 400
    for rows in (bright, close):
        median, sigma = flux_and_pulls(rows, "flux_psf")
        assert abs(median - 1) < 0.005
        assert 0.9 <= sigma <= 1.15
    # aperture fluxes of the same close pairs: biased high, error bars far too small
    close_ap = close[np.isfinite(close.flux_total)]
    median, sigma = flux_and_pulls(close_ap, "flux_total")
    assert median > 1.02 and sigma > 3
    # the neighbour counts and correlations say why
    assert (close.psf_n_neighbours >= 1).all()
    assert close.psf_corr_max.median() > bright[bright.nn > 4].psf_corr_max.median()


def test_uncatalogued_faint_sources_leave_the_fit_right(tmp_path):
    """Sources fainter than 30 µJy (S/N < ~2.5, one in seven) drawn but not catalogued: their
    light goes into the fitted background levels, the catalogued fluxes stay right."""
    cfg = dataclasses.replace(CROWDED, uncatalogued_below_ujy=30.0, n_images=1)
    sky = simulate_sky(tmp_path, cfg, scheduler="sync")
    catalog, truth = pd.read_csv(sky.catalog), pd.read_parquet(sky.truth_sources)
    assert len(catalog) == truth.catalogued.sum() < 0.9 * len(truth)
    assert not set(catalog.targetid) & set(truth.targetid[~truth.catalogued])
    res = _measure(sky, catalog)
    bright = res[res.flux_true / res.flux_psf_error > 20]
    assert len(bright) > 2000
    median, sigma = flux_and_pulls(bright, "flux_psf")
    assert abs(median - 1) < 0.005 and 0.9 <= sigma <= 1.15


def test_fitted_background_measures_better_than_the_local_one(crowded, crowded_measured):
    """Each source's local (annulus) background holds its neighbours' light; fitting one level
    per tile with the fluxes does not. Shown on the crowded sky: the default ("fit") has the
    better pulls."""
    sky, catalog = crowded
    local = _measure(sky, catalog, PhotometryConfig(psf_background="local"))
    stats = {}
    for name, res in (("fit", crowded_measured), ("local", local)):
        bright = res[res.flux_true / res.flux_psf_error > 20]
        median, sigma = flux_and_pulls(bright, "flux_psf")
        pull = (bright.flux_psf - bright.flux_true) / bright.flux_psf_error
        stats[name] = (abs(median - 1), abs(sigma - 1), abs(float(np.median(pull))))
    assert stats["fit"][1] < stats["local"][1]
    assert stats["fit"][2] < stats["local"][2]


@pytest.mark.parametrize("layout", ["qr2", "qr3"])
def test_isolated_bright_sources_unbiased(tmp_path, layout):
    cfg = SimConfig(n_images=8, size=256, n_sources=300, seed=11, radius=0.4, layout=layout)
    sky = simulate_sky(tmp_path, cfg, scheduler="sync")
    res = _measure(sky, pd.read_csv(sky.catalog))
    bright = res[(res.flux_true / res.flux_psf_error > 50) & (res.psf_quality == "")]
    assert len(bright) > 150
    assert abs(np.median(bright.flux_psf / bright.flux_true) - 1) < 0.003
    noiseless = simulate_sky(tmp_path / "noiseless", dataclasses.replace(cfg, noiseless=True), scheduler="sync")
    clean = _measure(noiseless, pd.read_csv(noiseless.catalog))
    clean = clean[clean.psf_quality == ""]
    assert abs(np.median(clean.flux_psf / clean.flux_true) - 1) < 0.003
    assert np.percentile(np.abs(clean.flux_psf / clean.flux_true - 1), 90) < 0.01


def test_errors_of_isolated_sources_reach_the_cramer_rao_bound(tmp_path):
    """The Cramér-Rao bound of a flux with a known PSF P (unit sum) and pixel variances V is
    (Σ P²/V)^-1/2: computed here from the injected PSF at the injected position and the file's
    VARIANCE, over all pixels around the source."""
    cfg = SimConfig(n_images=3, size=256, n_sources=300, seed=12, radius=0.4)
    sky = simulate_sky(tmp_path, cfg, scheduler="sync")
    res = _measure(sky, pd.read_csv(sky.catalog))
    res = res[(res.psf_quality == "") & (res.quality == "") & (res.nn > 8)]
    crb, psf_error, aperture_error = [], [], []
    for path in sky.files:
        rows = res[res.filename == path.name]
        with L2File(path) as l2:
            variance = l2.variance()
            to_ujy = u.Quantity(l2.wcs.proj_plane_pixel_area(), u.deg**2).to_value(u.arcsec**2) * UJY_ARCSEC2_PER_MJY_SR
        for r in rows.itertuples():
            cx, cy = int(round(r.x_true)), int(round(r.y_true))
            px, py = np.arange(cx - 6, cx + 7), np.arange(cy - 6, cy + 7)
            if px[0] < 0 or py[0] < 0 or px[-1] >= variance.shape[1] or py[-1] >= variance.shape[0]:
                continue
            p = psf_pixels((px - 0.5 - r.x_true)[None, :], (px + 0.5 - r.x_true)[None, :],
                           (py - 0.5 - r.y_true)[:, None], (py + 0.5 - r.y_true)[:, None], r.psf_sigma)
            info = np.nansum(p**2 / variance[py[0]:py[-1] + 1, px[0]:px[-1] + 1])
            crb.append(to_ujy / np.sqrt(info))
            psf_error.append(r.flux_psf_error)
            aperture_error.append(r.flux_total_error)
    crb, psf_error, aperture_error = map(np.array, (crb, psf_error, aperture_error))
    assert len(crb) > 100
    ratio = psf_error / crb
    assert 0.9 < np.median(ratio) < 1.1
    assert np.percentile(ratio, 95) < 1.15
    # the aperture error beside it: an aperture is not an optimal weighting of the pixels
    assert np.median(aperture_error / crb) > 1.2


@pytest.mark.parametrize("layout", ["qr2", "qr3"])
def test_zone_varying_psf_uses_the_zone_holding_the_source(tmp_path, layout):
    cfg = SimConfig(n_images=6, size=256, n_sources=300, seed=13, radius=0.4, layout=layout, cutouts="random",
                    psf_gradient=0.3, noiseless=True)
    sky = simulate_sky(tmp_path, cfg, scheduler="sync")
    catalog = pd.read_csv(sky.catalog)
    res = _measure(sky, catalog)
    res = res[res.psf_quality == ""]
    assert res.psf_sigma.max() / res.psf_sigma.min() > 1.3  # the zones differ
    assert abs(np.median(res.flux_psf / res.flux_true) - 1) < 0.003
    # the same files with the zone centres transposed: the wrong zones' PSFs show
    for path in sky.files:
        with fits.open(path, mode="update") as hdul:
            if layout == "qr2":
                h = hdul["PSF"].header
                for k in range(1, h["NAXIS3"] + 1):
                    h[f"XCTR_{k}"], h[f"YCTR_{k}"] = h[f"YCTR_{k}"], h[f"XCTR_{k}"]
            else:
                t = hdul["EPSF"].data
                t["XCENTER"], t["YCENTER"] = t["YCENTER"].copy(), t["XCENTER"].copy()
    wrong = _measure(sky, catalog)
    wrong = wrong[wrong.psf_quality == ""]
    assert np.median(np.abs(wrong.flux_psf / wrong.flux_true - 1)) > 0.01


def test_psf_erratum_files_are_read_with_their_zones_corrected(tmp_path):
    """QR2 files of pipeline VERSION 6.4-6.5.5 without +psffix1 carry transposed zone centres
    (IRSA's PSF erratum): the reader corrects them; the same files taken as they are (tagged
    +psffix1, as if their header were right) are measured with the wrong zones' PSFs."""
    cfg = SimConfig(n_images=6, size=256, n_sources=300, seed=14, radius=0.4, cutouts="random", psf_gradient=0.3,
                    noiseless=True, psf_erratum=True)
    sky = simulate_sky(tmp_path, cfg, scheduler="sync")
    catalog = pd.read_csv(sky.catalog)
    with L2File(sky.files[0]) as l2:
        assert l2.meta.version == "6.5.4"
    res = _measure(sky, catalog)
    res = res[res.psf_quality == ""]
    assert abs(np.median(res.flux_psf / res.flux_true) - 1) < 0.003
    for path in sky.files:
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["VERSION"] = "6.5.4+psffix1"
    wrong = _measure(sky, catalog)
    wrong = wrong[wrong.psf_quality == ""]
    assert np.median(np.abs(wrong.flux_psf / wrong.flux_true - 1)) > 0.01


@pytest.mark.parametrize("version, transposed", [("6.4", True), ("6.5.5", True), ("6.4+psffix1", False),
                                                 ("6.5.6", False), ("6.5.7", False), ("6.3.9", False),
                                                 ("7.0.1", False), ("", False), ("dev", False)])
def test_which_versions_carry_the_psf_erratum(version, transposed):
    assert psf_header_transposed(version) is transposed


def test_neighbour_catalog_deblends_targets(crowded, tmp_path):
    sky, catalog = crowded
    rng = np.random.default_rng(1)
    targets = catalog.iloc[np.sort(rng.choice(len(catalog), len(catalog) // 10, replace=False))]
    alone = _measure(sky, targets)
    assert set(alone.targetid) <= set(targets.targetid)

    def close_bright(res):
        bright = res[res.flux_true / res.flux_psf_error > 20]
        return bright, bright[bright.nn < 2]

    _, close = close_bright(alone)
    assert len(close) > 30
    # the unmodelled neighbours' light comes back: biased high, error bars far too small
    median, sigma = flux_and_pulls(close, "flux_psf")
    assert median > 1.005 and sigma > 3
    # the whole sky as neighbour catalog: the crowded-sky thresholds hold for the targets
    out = tmp_path / "per_image"
    n = run_extraction(sky.archive, targets, PhotometryConfig(), out, neighbours=catalog[["targetid", "ra", "dec"]])
    assert n == len(sky.files)
    rows = pd.concat(pd.read_parquet(f) for f in sorted(out.glob("*.parquet")))
    assert set(rows.targetid) <= set(targets.targetid)
    assert len(rows) == len(alone)
    truth = pd.read_parquet(sky.truth_detections)
    joint = rows.merge(truth, on=["targetid", "filename"], suffixes=("", "_true")).merge(
        alone[["targetid", "filename", "nn"]], on=["targetid", "filename"])
    bright, close = close_bright(joint)
    for subset in (bright, close):
        median, sigma = flux_and_pulls(subset, "flux_psf")
        assert abs(median - 1) < 0.005
        assert 0.9 <= sigma <= 1.15
    # units in the file metadata
    field = pq.read_schema(next(out.glob("*.parquet"))).field("flux_psf")
    assert field.metadata[b"unit"] == b"uJy"
    # a changed neighbour catalog measures the images again; the same one reuses them
    assert process_single_image(sky.files[0], targets, PhotometryConfig(), out,
                                neighbours=catalog[["ra", "dec"]]) is None
    assert process_single_image(sky.files[0], targets, PhotometryConfig(), out,
                                neighbours=catalog[["ra", "dec"]].iloc[::2]) is not None


def test_a_target_in_the_neighbour_catalog_is_fitted_once(crowded):
    sky, catalog = crowded
    with L2File(sky.files[0]) as l2:
        alone = measure_image(l2, catalog)
        same = measure_image(l2, catalog, neighbours=catalog)
        # the catalog itself as neighbours, positions moved by 0.1"
        moved = measure_image(l2, catalog, neighbours=catalog.assign(
            ra=catalog.ra + 0.1 / 3600 / np.cos(np.radians(catalog.dec))))
    # fitted twice, each would be half of a degenerate pair with a huge error
    assert (moved.psf_quality == same.psf_quality).all()
    np.testing.assert_allclose(moved.flux_psf_error, same.flux_psf_error, rtol=0.01)
    # (a bright neighbour outside the image moved by 0.1" changes the sources at the edge)
    inner = (alone.x > 5) & (alone.x < 506) & (alone.y > 5) & (alone.y < 506)
    assert np.max(np.abs(moved.flux_psf - same.flux_psf)[inner] / same.flux_psf_error[inner]) < 0.01
    # what the neighbours add are the sources just outside the image, whose light reaches in
    # (through the edge tiles' backgrounds too): far from the edges nothing changes
    far = (alone.x > 70) & (alone.x < 441) & (alone.y > 70) & (alone.y < 441)
    assert np.max(np.abs(same.flux_psf - alone.flux_psf)[far] / alone.flux_psf_error[far]) < 0.01


def test_degenerate_pairs_are_reported_with_honest_errors(crowded):
    sky, catalog = crowded
    truth = pd.read_parquet(sky.truth_detections)
    with L2File(sky.files[0]) as l2:
        plain = measure_image(l2, catalog)
        bright = plain[(plain.flux_psf / plain.flux_psf_error > 50) & (plain.psf_quality == "")].iloc[:40]
        # catalog duplicates 0.1 px away from 40 bright sources
        dup = bright[["targetid", "ra", "dec"]].assign(targetid=bright.targetid + 10**15,
                                                       ra=bright.ra + 0.1 * PIX_DEG / np.cos(np.radians(bright.dec)))
        res = measure_image(l2, pd.concat([catalog, dup], ignore_index=True))
    pair = res[res.targetid.isin(bright.targetid) | res.targetid.isin(dup.targetid)]
    assert len(pair) == 80
    assert pair.psf_quality.str.contains("psf_degenerate").all()
    assert np.isfinite(pair.flux_psf_error).all() and (pair.flux_psf_error > 0).all()
    one = pair[pair.targetid.isin(bright.targetid)].set_index("targetid")
    two = pair[pair.targetid.isin(dup.targetid)].set_index(dup.set_index("targetid").index.map(lambda t: t - 10**15))
    single = bright.set_index("targetid")
    # the data cannot split a pair: each flux's error is many times the single source's
    assert (one.flux_psf_error / single.flux_psf_error > 3).all()
    # ... but their sum is the source's flux
    total = one.flux_psf + two.flux_psf.reindex(one.index)
    t = truth.set_index(["filename", "targetid"]).loc[[(plain.filename.iloc[0], i) for i in one.index], "flux_true"]
    assert abs(np.median(total.to_numpy() / t.to_numpy()) - 1) < 0.01
    # the rest of the image is as before
    others = res[~res.targetid.isin(pair.targetid)].set_index("targetid")
    far = plain.set_index("targetid").loc[others.index]
    assert np.median(np.abs(others.flux_psf - far.flux_psf) / far.flux_psf_error) < 0.01


def test_images_with_zero_one_and_thirty_thousand_sources(crowded):
    sky, catalog = crowded
    rng = np.random.default_rng(2)
    with L2File(sky.files[0]) as l2:
        ra_c, dec_c = l2.wcs.all_pix2world([[255.5, 255.5]], 0)[0]
        none = measure_image(l2, pd.DataFrame({"targetid": [1], "ra": [(ra_c + 10) % 360], "dec": [dec_c]}))
        assert none.empty and "flux_psf" in none.columns
        one = measure_image(l2, catalog.iloc[[int(np.argmin(np.hypot(catalog.ra - ra_c, catalog.dec - dec_c)))]])
        assert len(one) == 1 and np.isfinite(one.flux_psf).all() and np.isfinite(one.flux_psf_error).all()
        x, y = rng.uniform(-0.5, 511.5, (2, 30000))
        ra, dec = l2.wcs.all_pix2world(x, y, 0)
        many = measure_image(l2, pd.DataFrame({"targetid": np.arange(30000), "ra": ra, "dec": dec}))
    assert len(many) == 30000
    fitted = many.psf_quality != "no_pixels"
    assert fitted.mean() > 0.99
    assert np.isfinite(many.flux_psf[fitted]).all() and (many.flux_psf_error[fitted] > 0).all()


def test_joint_fit_equals_dense_weighted_least_squares(crowded):
    """The sparse assembly and solve against a dense design matrix built pixel by pixel,
    and the errors (local inverse) against the dense inverse of the normal matrix."""
    sky, catalog = crowded
    with L2File(sky.files[0]) as l2:
        sl = (slice(100, 196), slice(200, 296))
        image, zodi, var, flags = (np.ascontiguousarray(l2.raw(h)[sl]).astype(dt) for h, dt in
                                   (("IMAGE", "f4"), ("ZODI", "f4"), ("VARIANCE", "f4"), ("FLAGS", "i4")))
        x, y = l2.wcs.all_world2pix(catalog.ra, catalog.dec, 0)
        inside = (x > 200) & (x < 295) & (y > 100) & (y < 195)
        x, y = x[inside] - 200, y[inside] - 100
        stamps = l2.psf.stamps(*l2.parent_pixel(x + 200, y + 100), 3)
    bad_mask = PhotometryConfig().bad_mask
    fit = fit_psf(image, zodi, var, flags, 1.0, x, y, stamps, radius=3.0, bad_mask=bad_mask, tile=32)
    n = x.size
    assert n > 150
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    ny, nx = image.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    near = np.zeros(image.shape, bool)
    for k in range(n):
        near |= (xx - x[k]) ** 2 + (yy - y[k]) ** 2 <= 9.0
    usable = near & ((flags & bad_mask) == 0) & np.isfinite(image - zodi) & (var > 0)
    rows = np.flatnonzero(usable.ravel())
    tiles = ((yy // 32) * (-(-nx // 32)) + xx // 32).ravel()[rows]
    tile_ids, tile_col = np.unique(tiles, return_inverse=True)
    design = np.zeros((rows.size, n + tile_ids.size))
    where = {p: i for i, p in enumerate(rows)}
    for k in range(n):
        for a in range(7):
            for b in range(7):
                r, c = iy[k] + a - 3, ix[k] + b - 3
                if 0 <= r < ny and 0 <= c < nx and (r * nx + c) in where:
                    design[where[r * nx + c], k] = stamps[k, a, b]
    design[np.arange(rows.size), n + tile_col] = 1.0
    w = 1.0 / var.ravel()[rows]
    data = (image - zodi).ravel()[rows]
    normal = design.T @ (design * w[:, None])
    solution = np.linalg.solve(normal, design.T @ (w * data))
    np.testing.assert_allclose(fit.flux, solution[:n], rtol=1e-6, atol=1e-6 * np.abs(solution[:n]).max())
    exact = np.diag(np.linalg.inv(normal))[:n]
    ratio = fit.variance / exact
    assert np.all(ratio <= 1 + 1e-9)  # conditioning on the far neighbours can only shrink it
    assert np.median(ratio) > 0.99 and np.percentile(ratio, 5) > 0.95


def test_psf_fit_off_and_config_errors(crowded, tmp_path):
    sky, catalog = crowded
    with L2File(sky.files[0]) as l2:
        off = measure_image(l2, catalog.iloc[:200], PhotometryConfig(psf_fit=False))
    assert off.flux_psf.isna().all() and off.psf_quality.isna().all()
    assert np.isfinite(off.flux_total).any()
    assert resolve(off, SpectraConfig()) == ("flux_total", "flux_total_error")
    for bad in ({"psf_fit_radius": 0.1}, {"psf_background": "median"}, {"psf_background_tile": 0}, {"psf_fit": "yes"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PhotometryConfig(**bad)
    path = tmp_path / "n.csv"
    path.write_text("id,ra,dec\n1,10,5\n2,400,5\n")
    with pytest.raises(CatalogError, match=r"n\.csv.*ra.*line\(s\) 3"):
        load_neighbours(path)
    with pytest.raises(CatalogError, match="not found"):
        load_neighbours(tmp_path / "missing.parquet")
    pd.DataFrame({"ID": [1], "RA": [10.0], "Dec": [5.0]}).to_parquet(tmp_path / "n.parquet")
    assert load_neighbours(tmp_path / "n.parquet").to_dict("list") == {"ra": [10.0], "dec": [5.0]}
