"""Cubes on flawed data, and spectra taken from cubes with errors that know the drizzle's
correlated noise, against injected truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS

from spxdask.drizzle3d import Drizzle3DConfig, drizzle, extract_spectrum, load_cube
from spxdask.drizzle3d.cube import correlation_columns
from spxdask.simulate import SimConfig, simulate_sky

#: Six frames of a flat-spectrum sky of detector 1, sources at least 20" apart.
SKY = SimConfig(n_images=6, size=256, n_sources=150, radius=0.15, detectors=(1,), variable_fraction=0.0,
                flat_spectra=True)
ISOLATION_ARCSEC = 45.0


def _cube(sky, root, **options):
    config = Drizzle3DConfig(center_ra=150.1, center_dec=2.2, width=20, height=20, detector=1,
                             archive=str(sky.archive), output_dir=root, overwrite=True, **options)
    return load_cube(drizzle(config)[1])


def _spectra(sky, cube, **kw) -> pd.DataFrame:
    """The spectra of the isolated sources, one row per covered plane, with their true flux."""
    truth = pd.read_parquet(sky.truth_sources)
    rows = []
    for r in truth.itertuples():
        d = np.hypot((truth.ra - r.ra) * np.cos(np.radians(r.dec)), truth.dec - r.dec) * 3600
        if np.sort(d)[1] < ISOLATION_ARCSEC:
            continue
        try:
            spectrum = extract_spectrum(cube, r.ra, r.dec, **kw)
        except ValueError:  # outside the cube
            continue
        rows.append(spectrum.assign(truth=r.f0_ujy, targetid=r.targetid))
    out = pd.concat(rows, ignore_index=True)
    return out[np.isfinite(out.flux) & (out.flag == 0) & (out.n_images > 0)]


def _robust(x) -> tuple[float, float, float]:
    q16, q50, q84 = np.percentile(x, [16, 50, 84])
    return q16, q50, q84


def test_flagged_pixels_stay_out_of_cubes_by_default(tmp_path):
    """0.5 % hot pixels (+5..50 MJy/sr, flagged HOT): the default cube is right; the
    reference's default (every pixel in) is not, and neither is weighting each pixel by its own
    variance (the reference's weights: a bright source's own photon noise weights it down)."""
    sky = simulate_sky(tmp_path / "sky", dataclasses.replace(SKY, seed=7, flux_range_ujy=(5000, 30000),
                                                           hot_fraction=0.005), scheduler="processes")
    cube = _cube(sky, tmp_path / "default")
    assert cube["header"]["EXCLBITS"] == "0,1,2,6,7,9,10,11,14,15,17,19"
    res = _spectra(sky, cube)
    assert len(res) > 100 and res.targetid.nunique() > 40
    q16, q50, q84 = _robust(res.flux / res.truth)
    assert abs(q50 - 1) < 0.005 and q84 - q16 < 0.02
    everything = _spectra(sky, _cube(sky, tmp_path / "all-pixels", exclude_flags=[]))
    q16, q50, q84 = _robust(everything.flux / everything.truth)
    assert q50 > 1.03 and q84 > 1.3
    assert _cube(sky, tmp_path / "none", exclude_flags=[])["header"]["EXCLBITS"] == "none"
    own = _spectra(sky, _cube(sky, tmp_path / "ivar", weighting="ivar"))
    assert np.median(own.flux / own.truth) < 0.98


@pytest.fixture(scope="module")
def faint(tmp_path_factory):
    """Three seeds of faint sources (S/N ~ 10 per plane), where the noise, not the
    resampling, sets the error."""
    out = []
    for seed in (1, 2, 3):
        root = tmp_path_factory.mktemp(f"faint{seed}")
        sky = simulate_sky(root / "sky", dataclasses.replace(SKY, seed=seed, flux_range_ujy=(150, 600)),
                           scheduler="processes")
        out.append((sky, _cube(sky, root / "cube")))
    return out


def test_cube_spectrum_errors_know_the_correlated_noise(faint):
    pulls, naive = [], []
    for sky, cube in faint:
        res = _spectra(sky, cube)
        pulls.append((res.flux - res.truth) / res.flux_error)
        # the plain VARIANCE sum: the same spectrum with the correlation model set to zero
        independent = {**cube, "wavelength": cube["wavelength"].copy()}
        for name in correlation_columns():
            independent["wavelength"][name] = 0.0
        plain = _spectra(sky, independent)
        naive.append((plain.flux - plain.truth) / plain.flux_error)
    pulls, naive = np.concatenate(pulls), np.concatenate(naive)
    assert pulls.size > 300
    q16, q50, q84 = _robust(pulls)
    assert 0.9 <= (q84 - q16) / 2 <= 1.15 and abs(q50) < 0.15
    q16, _, q84 = _robust(naive)
    assert (q84 - q16) / 2 > 1.2  # too small errors


def test_correlation_model_is_recorded_per_plane(faint):
    _, cube = faint[0]
    table = cube["wavelength"]
    covered = table["N_INPUT_SC"] > 0
    rho = np.column_stack([table[name] for name in correlation_columns()])[covered]
    # pixfrac 0.8 footprints, about one output pixel across: side neighbours share much more
    # noise than diagonal ones (0.19-0.22 and 0.03-0.04 here; a model that dropped pixfrac or
    # the input/output scale ratio would move them by more than these bands)
    assert (rho[:, :2] > 0.17).all() and (rho[:, :2] < 0.24).all()
    assert (rho[:, 2:] > 0.02).all() and (rho[:, 2:] < 0.05).all()


def test_extract_spectrum_at_edges_gaps_and_masked_planes(faint):
    sky, cube = faint[0]
    wcs = WCS(cube["sci_header"]).celestial
    n_z, ny, nx = cube["sci"].shape
    # outside the cube: a clear error
    ra, dec = wcs.all_pix2world([[nx + 20, ny / 2]], 0)[0]
    with pytest.raises(ValueError, match="outside the cube"):
        extract_spectrum(cube, ra, dec)
    # at the edge: fluxes where voxels exist, the missing part of the aperture flagged
    ra, dec = wcs.all_pix2world([[0.5, ny / 2]], 0)[0]
    edge = extract_spectrum(cube, ra, dec)
    assert (edge.flag[edge.n_images > 0] > 0).all()
    # a fully masked plane: NaN flux, every aperture voxel flagged; the others untouched
    plane = int(np.argmax(cube["wavelength"]["N_INPUT_SC"]))
    sci = cube["sci"].copy()
    sci[plane] = np.nan
    ra, dec = wcs.all_pix2world([[nx / 2, ny / 2]], 0)[0]
    masked = extract_spectrum({**cube, "sci": sci}, ra, dec)
    whole = extract_spectrum(cube, ra, dec)
    assert np.isnan(masked.flux[plane]) and masked.flag[plane] >= 30
    others = np.arange(n_z) != plane
    pd.testing.assert_series_equal(masked.flux[others], whole.flux[others])
    # planes nothing covers: NaN, zero images
    empty = cube["wavelength"]["N_INPUT_SC"] == 0
    assert empty.any() and whole.flux[empty].isna().all() and (whole.n_images[empty] == 0).all()
    for bad in ({"radius": 0}, {"radius": 30, "annulus": (25, 40)}, {"method": "psf-fit"}):
        with pytest.raises(ValueError, match="extract_spectrum"):
            extract_spectrum(cube, ra, dec, **bad)
    # many positions in one call: the same spectra, one after the other
    ras, decs = wcs.all_pix2world([nx / 2, nx / 3, 2 * nx / 3], [ny / 2, ny / 3, ny / 2], 0)
    many = extract_spectrum(cube, ras, decs)
    assert list(many.columns) == ["source", "wavelength", "flux", "flux_error", "n_images", "flag"]
    for k in range(3):
        one = extract_spectrum(cube, ras[k], decs[k])
        pd.testing.assert_frame_equal(many[many.source == k].drop(columns="source").reset_index(drop=True), one)
    # a cube without a correlation model (written by the reference) still works, with a warning
    table = pd.DataFrame({n: np.asarray(cube["wavelength"][n]) for n in ("INDEX", "LAMBDA", "N_INPUT_SC")})
    old = {**cube, "wavelength": table.to_records(index=False)}
    with pytest.warns(UserWarning, match="correlation model"):
        extract_spectrum(old, ra, dec)
