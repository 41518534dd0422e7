"""Sources as they are on the frame: moving stars measured at each image's epoch, each image's
own astrometry measured against its stars, and galaxies measured with their profiles, all
against the simulator's injected truth (its positions come from astropy's space motion, not
from the pipeline's ERFA route; its galaxies are drawn in real space and convolved by FFT with
its analytic PSF, not through the file's PSF in Fourier space as the pipeline models them)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import iqr

from spxdask import PhotometryConfig
from spxdask.batch import extract_images
from spxdask.per_image import ASTROMETRY_KEY
from spxdask.photometry import measure_image
from spxdask.photometry.galaxy import galaxy_stamps, local_jacobian
from spxdask.photometry.motion import positions_at
from spxdask.simulate import SimConfig, make_catalog, plan_survey, simulate_sky, true_positions, write_epsf_calibration
from spxdask.spectra import SpectraConfig
from spxdask.spherex import L2File
from spxdask.spherex.calibration import CalibrationError

from .conftest import flux_and_pulls

PIX_DEG = 6.15 / 3600
#: 8 frames of 384² with 500 sources, as in the issue's table.
SKY = dict(n_images=8, size=384, n_sources=500, seed=5, detectors=(1,), radius=384 * 0.6 * PIX_DEG,
           variable_fraction=0.0, min_separation_arcsec=0)
MOVING = SimConfig(**SKY, moving_fraction=0.5, max_proper_motion=1000)
OFFSET = SimConfig(**SKY, header_offset_arcsec=1.0)
#: 40 % galaxies of every Tractor type, half-light radii 1-4".
GALAXIES = SimConfig(**{**SKY, "n_images": 4}, galaxy_fraction=0.4)
#: A crowded sky (one source per ~70 px², fluxes down to S/N ~ 1, complete catalog), 30 % galaxies.
CROWDED_GALAXIES = SimConfig(n_images=2, size=384, n_sources=4000, seed=7, detectors=(1,), radius=384 * 0.75 * PIX_DEG,
                             variable_fraction=0.0, min_separation_arcsec=0, galaxy_fraction=0.3,
                             flux_range_ujy=(10, 30000))


def _measured(sky, catalog: pd.DataFrame, config: PhotometryConfig) -> tuple[pd.DataFrame, list]:
    """Every frame of ``sky`` measured, joined with the truth; the astrometry records."""
    truth = pd.read_parquet(sky.truth_detections)
    frames, records = [], []
    for path in sky.files:
        with L2File(path) as l2:
            frames.append(measure_image(l2, catalog, config))
        records.append(frames[-1].attrs["astrometry"])
    rows = pd.concat(frames, ignore_index=True).merge(truth, on=["targetid", "filename"], suffixes=("", "_true"))
    return rows, records


def _bright(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows.flux_true / rows.flux_psf_error > 20]


def _offsets(rows: pd.DataFrame) -> np.ndarray:
    return np.hypot(rows.x - rows.x_true, rows.y - rows.y_true)


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    sky = simulate_sky(tmp_path_factory.mktemp("moving"), MOVING, scheduler="sync")
    return sky, pd.read_csv(sky.catalog)


@pytest.fixture(scope="module")
def offset(tmp_path_factory):
    return simulate_sky(tmp_path_factory.mktemp("offset"), OFFSET, scheduler="sync")


def test_positions_at_an_epoch_agree_with_astropys_space_motion():
    catalog = make_catalog(SimConfig(n_sources=3000, moving_fraction=0.7, max_proper_motion=5000,
                                     min_separation_arcsec=0, center=(271.0, 86.5)))  # near the pole too
    catalog["parallax"] *= 100  # up to ~2": the observer's place matters
    for mjd in (61027.3, 61300.8):
        expected = true_positions(catalog, mjd)
        ra, dec = positions_at(catalog, mjd)
        cosd = np.cos(np.radians(dec))
        miss = np.hypot((ra - expected[0] + 180) % 360 - 180, dec - expected[1]) * 3.6e6
        moved = np.hypot((ra - catalog.ra) * cosd, dec - catalog.dec) * 3.6e6
        assert np.percentile(moved, 95) > 5000  # mas: the test sees motions of arcseconds
        assert np.max(np.hypot(((ra - expected[0] + 180) % 360 - 180) * cosd, dec - expected[1]) * 3.6e6) < 0.1
        still = catalog.pmra.isna().to_numpy()
        assert still.any() and np.all(miss[still] == 0)


def test_moving_rows_without_an_epoch_are_refused_naming_the_remedy():
    catalog = make_catalog(SimConfig(n_sources=50, moving_fraction=0.5, min_separation_arcsec=0)).drop(columns="ref_epoch")
    with pytest.raises(ValueError, match="catalog_epoch"):
        positions_at(catalog, 61027.0)
    ra, _ = positions_at(catalog, 61027.0, catalog_epoch=2016.0)
    assert not np.allclose(ra, catalog.ra, rtol=0, atol=1e-9)


def test_moving_stars_are_measured_where_they_are_at_each_image(moving):
    sky, catalog = moving
    rows, _ = _measured(sky, catalog, PhotometryConfig())
    pm = catalog.set_index("targetid").reindex(rows.targetid)[["pmra", "pmdec"]].to_numpy()
    fast = np.hypot(*pm.T) > 100
    bright = _bright(rows)
    fast_bright = bright[fast[bright.index]]
    assert len(fast_bright) >= 100
    assert np.max(_offsets(fast_bright)) < 0.03
    ratio = fast_bright.flux_psf / fast_bright.flux_true
    assert abs(np.median(ratio) - 1) < 0.005
    pull = (bright.flux_psf - bright.flux_true) / bright.flux_psf_error
    assert 0.85 < iqr(pull, scale="normal") < 1.3
    # the rows say where each source was measured: where it was when the image was taken
    for (_, mjd), group in fast_bright.groupby(["filename", "mjd_true"]):
        ra, dec = true_positions(catalog.set_index("targetid").loc[group.targetid].reset_index(), mjd)
        assert np.max(np.hypot((group.ra - ra) * np.cos(np.radians(dec)), group.dec - dec)) * 3.6e6 < 1  # mas


def test_the_same_stars_without_their_motions_are_missed(moving):
    """The case the motions fix: fixed at their catalog epoch, the fast movers sit beside their models."""
    sky, catalog = moving
    rows, _ = _measured(sky, catalog[["targetid", "ra", "dec"]], PhotometryConfig(astrometry="none"))
    pm = catalog.set_index("targetid").reindex(rows.targetid)[["pmra", "pmdec"]].to_numpy()
    bright = _bright(rows)
    fast_bright = bright[np.hypot(*pm.T)[bright.index] > 300]
    assert np.median(_offsets(fast_bright)) > 0.3
    assert np.median(fast_bright.flux_psf / fast_bright.flux_true) < 0.9


def test_each_images_header_offset_is_measured_and_applied(offset):
    catalog = pd.read_csv(offset.catalog)
    rows, records = _measured(offset, catalog, PhotometryConfig())
    specs = plan_survey(OFFSET, make_catalog(OFFSET))
    for spec, record in zip(specs, records):
        true_shift = np.array(spec.header_offset) * 6.15  # arcsec along x, y
        assert np.hypot(*true_shift) == pytest.approx(1.0)
        assert record.status == "applied" and record.n_stars >= 50
        found = np.array([record.dx, record.dy])
        error = np.array([record.dx_error, record.dy_error])
        assert np.all(np.abs(found - true_shift) < np.maximum(4 * error, 0.03 * 6.15))
        assert record.rms < 0.3
    bright = _bright(rows)
    assert np.median(_offsets(bright)) < 0.03
    assert abs(np.median(bright.flux_psf / bright.flux_true) - 1) < 0.005
    pull = (bright.flux_psf - bright.flux_true) / bright.flux_psf_error
    assert 0.85 < iqr(pull, scale="normal") < 1.3


def test_without_the_astrometry_an_offset_header_biases_the_fluxes(offset):
    rows, records = _measured(offset, pd.read_csv(offset.catalog), PhotometryConfig(astrometry="none"))
    assert all(r is None for r in records)
    bright = _bright(rows)
    assert np.median(_offsets(bright)) > 0.12
    assert np.median(bright.flux_psf / bright.flux_true) < 0.97


def test_an_image_with_a_right_header_comes_out_unchanged(moving):
    sky, catalog = moving
    path = sky.files[0]
    with L2File(path) as l2:
        applied = measure_image(l2, catalog, PhotometryConfig())
        plain = measure_image(l2, catalog, PhotometryConfig(astrometry="none"))
    record = applied.attrs["astrometry"]
    assert record.status == "not significant" and record.n_stars >= 20
    assert np.hypot(record.dx, record.dy) < 4 * np.hypot(record.dx_error, record.dy_error)
    pd.testing.assert_frame_equal(applied, plain, check_like=False)


def test_an_image_whose_stars_disagree_or_are_too_few_keeps_its_header(offset):
    catalog = pd.read_csv(offset.catalog)
    with L2File(offset.files[0]) as l2:
        plain = measure_image(l2, catalog, PhotometryConfig(astrometry="none"))
        # the stars scatter by more than allowed: recorded, not applied
        strict = measure_image(l2, catalog, PhotometryConfig(astrometry_max_rms=0.01))
        # one target: nothing to measure the shift with
        alone = measure_image(l2, catalog[catalog.targetid == plain.targetid.iloc[0]], PhotometryConfig())
        # significant, measured, not applied
        measured = measure_image(l2, catalog, PhotometryConfig(astrometry="measure"))
    assert strict.attrs["astrometry"].status == "untrusted" and strict.attrs["astrometry"].rms > 0.01
    pd.testing.assert_frame_equal(strict, plain)
    assert alone.attrs["astrometry"].status == "too few stars" and np.isnan(alone.attrs["astrometry"].dx)
    assert measured.attrs["astrometry"].status == "measured" and not measured.attrs["astrometry"].applied
    pd.testing.assert_frame_equal(measured, plain)


def test_the_astrometry_reaches_the_manifest_and_the_files_and_motions_the_fingerprint(moving, tmp_path):
    sky, catalog = moving
    out = tmp_path / "run" / "per_image"
    files = [str(p) for p in sky.files[:3]]
    assert extract_images(files, catalog, PhotometryConfig(), out) == 3
    manifest = pd.read_parquet(tmp_path / "run" / "manifest.parquet")
    assert set(manifest.astrometry) == {"not significant"}
    assert (manifest.astrometry_n_stars >= 20).all() and manifest.astrometry_dx_error.between(0, 0.05).all()
    for _, row in manifest.iterrows():
        stored = json.loads(pq.read_schema(row.output).metadata[ASTROMETRY_KEY])
        assert stored["n_stars"] == row.astrometry_n_stars and stored["dx"] == pytest.approx(row.astrometry_dx)
    # unchanged inputs: nothing to do, the records kept; a changed motion: those images again
    assert extract_images(files, catalog, PhotometryConfig(), out) == 0
    assert set(pd.read_parquet(tmp_path / "run" / "manifest.parquet").astrometry) == {"not significant"}
    changed = catalog.assign(pmra=catalog.pmra.where(catalog.pmra.isna(), catalog.pmra + 1.0))
    assert extract_images(files, changed, PhotometryConfig(), out) == 3
    with pytest.raises(ValueError, match="ref_epoch.*catalog_epoch"):
        extract_images(files, catalog.drop(columns="ref_epoch"), PhotometryConfig(), tmp_path / "other" / "per_image")


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory):
    sky = simulate_sky(tmp_path_factory.mktemp("galaxies"), GALAXIES, scheduler="sync")
    catalog = pd.read_csv(sky.catalog)
    rows, _ = _measured(sky, catalog, PhotometryConfig())
    return sky, catalog, rows.merge(catalog[["targetid", "type"]], on="targetid")


def test_galaxies_are_measured_whole_by_their_models_and_stars_stay_right(galaxies):
    _, _, rows = galaxies
    bright = rows[rows.flux_true / rows.flux_model_error > 20]
    assert (bright.model == bright.type).all()  # every source measured with its catalog type
    for kind, group in bright.groupby("type"):
        assert len(group) >= 50, kind
        ratio, pulls = flux_and_pulls(group, "flux_model")
        assert abs(ratio - 1) < (0.005 if kind == "PSF" else 0.01), (kind, ratio)
        assert 0.85 < pulls < 1.3, (kind, pulls)
        if kind != "PSF":  # the point model misses a galaxy's light: what the models fix
            assert flux_and_pulls(group, "flux_psf")[0] < 0.9


def test_galaxies_in_a_crowded_field_are_unbiased(tmp_path):
    sky = simulate_sky(tmp_path, CROWDED_GALAXIES, scheduler="sync")
    catalog = pd.read_csv(sky.catalog)
    rows, _ = _measured(sky, catalog, PhotometryConfig())
    rows = rows.merge(catalog[["targetid", "type"]], on="targetid")
    assert len(rows) / (2 * 384**2) > 1 / 80  # one catalogued source per 80 px² or more
    bright = rows[rows.flux_true / rows.flux_model_error > 20]
    for extended, group in bright.groupby(bright.type != "PSF"):
        assert len(group) >= 300
        ratio, pulls = flux_and_pulls(group, "flux_model")
        assert abs(ratio - 1) < (0.01 if extended else 0.005) and 0.85 < pulls < 1.3, (extended, ratio, pulls)


def test_a_catalog_without_shapes_measures_points_as_before(galaxies):
    sky, catalog, _ = galaxies
    with L2File(sky.files[0]) as l2:
        plain = measure_image(l2, catalog[["targetid", "ra", "dec"]], PhotometryConfig())
    assert set(plain.model) == {"PSF"}
    assert np.array_equal(plain.flux_model, plain.flux_psf, equal_nan=True)
    assert np.array_equal(plain.flux_model_error, plain.flux_psf_error, equal_nan=True)


@pytest.mark.parametrize("layout", ["qr2", "qr3"])
def test_a_vanishing_galaxy_is_the_files_own_psf(layout, sky_qr2, sky_qr3):
    """The Fourier-space model with a tiny half-light radius against the PSF stamps integrated
    in real space: the two routes to the effective PSF agree."""
    sky = sky_qr2 if layout == "qr2" else sky_qr3
    rng = np.random.default_rng(2)
    with L2File(sky.files[0]) as l2:
        x, y = rng.uniform(5, 250, 40), rng.uniform(5, 250, 40)
        xp, yp = l2.parent_pixel(x, y)
        points = l2.psf.stamps(xp, yp, 3)
        tiny = galaxy_stamps(l2.psf, xp, yp, local_jacobian(l2.wcs, x, y), np.ones(40), np.full(40, 0.01),
                             np.ones(40), np.zeros(40), 3)
        big = galaxy_stamps(l2.psf, xp, yp, local_jacobian(l2.wcs, x, y), np.ones(40), np.full(40, 3.0),
                            np.ones(40), np.zeros(40), 3)
    # QR3's ePSF is interpolated bicubically by the stamps (2.6e-3 of the peak per pixel)
    assert np.abs(tiny - points).max() < (1e-3 if layout == "qr2" else 5e-3) * points.max()
    assert np.abs(big - points).max() > 0.05 * points.max()  # a 3" galaxy is not a point


def test_spectra_take_the_model_flux():
    assert SpectraConfig().resolve_flux(["flux_model", "flux_model_error", "flux_psf", "flux_psf_error",
                                         "flux_total", "flux_total_error"]) == ("flux_model", "flux_model_error")


def test_irsas_epsf_calibration_replaces_a_qr2_files_psf(moving, sky_qr3, tmp_path):
    sky, catalog = moving
    folder = tmp_path / "epsf"
    write_epsf_calibration(folder, [1])
    with_epsf = PhotometryConfig(epsf_calibration=str(folder))
    rows, _ = _measured(sky, catalog, with_epsf)
    bright = _bright(rows)
    assert abs(np.median(bright.flux_psf / bright.flux_true) - 1) < 0.005
    assert 0.85 < iqr((bright.flux_psf - bright.flux_true) / bright.flux_psf_error, scale="normal") < 1.3
    with L2File(sky.files[0]) as l2:
        own = measure_image(l2, catalog, PhotometryConfig())
        other = measure_image(l2, catalog, with_epsf)
    assert not np.array_equal(own.flux_psf, other.flux_psf)  # the calibration's PSF was used
    with L2File(sky_qr3.files[0]) as l2:  # a QR3 file keeps its own ePSF
        qr3 = pd.read_csv(sky_qr3.catalog)
        pd.testing.assert_frame_equal(measure_image(l2, qr3, PhotometryConfig()), measure_image(l2, qr3, with_epsf))


def test_the_epsf_calibration_is_in_the_fingerprint_and_checked_first(moving, tmp_path):
    sky, catalog = moving
    folder = tmp_path / "epsf"
    write_epsf_calibration(folder, [1])
    files = [str(p) for p in sky.files[:2]]
    out = tmp_path / "run" / "per_image"
    assert extract_images(files, catalog, PhotometryConfig(), out) == 2
    assert extract_images(files, catalog, PhotometryConfig(epsf_calibration=str(folder)), out) == 2
    assert extract_images(files, catalog, PhotometryConfig(epsf_calibration=str(folder)), out) == 0
    write_epsf_calibration(folder, [1], gradient=0.1)  # a new version of the file: measured again
    assert extract_images(files, catalog, PhotometryConfig(epsf_calibration=str(folder)), out) == 2
    with pytest.raises(CalibrationError, match="no folder of ePSF calibration files"):
        extract_images(files, catalog, PhotometryConfig(epsf_calibration=str(tmp_path / "nothing")), out)
    other = tmp_path / "epsf_d2"
    write_epsf_calibration(other, [2])
    assert extract_images(files, catalog, PhotometryConfig(epsf_calibration=str(other)), out) == 0
    manifest = pd.read_parquet(tmp_path / "run" / "manifest.parquet")
    assert (manifest.status == "failed").all() and manifest.error.str.contains("detector D1").all()
