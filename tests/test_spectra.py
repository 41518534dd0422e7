"""Channel spectra and the variability test, against the injected SEDs and light curves."""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client, LocalCluster
from scipy import stats

from spxdask.batch import BatchConfig, BatchPipeline, aggregate_lightcurves, read_lightcurve, read_spectrum
from spxdask.batch.plot import draw_lightcurve, plot_spectrum
from spxdask.catalog import build_catalog
from spxdask.catalog.export import write_sources
from spxdask.catalog.versions import current_version
from spxdask.cli import main
from spxdask.per_image import write as write_per_image
from spxdask.photometry import COLUMNS
from spxdask.simulate import SimConfig, simulate_sky, true_flux
from spxdask.spectra import SOURCE_COLUMNS, SPECTRUM_COLUMNS, SpectraConfig
from spxdask.spectra.variability import p_value
from spxdask.spherex.channels import channel_table

from .conftest import lightcurve_rows

# random cut-outs: each source is seen at many wavelengths of every detector, at four epochs
SPECTRA_SKY = SimConfig(n_images=120, size=256, n_sources=400, seed=5, cutouts="random", n_epochs=4, radius=0.3,
                        variable_fraction=0.35)


def robust(x) -> tuple[float, float]:
    """Median and half the 16-84 % range."""
    q16, q50, q84 = np.percentile(x, [16, 50, 84])
    return q50, (q84 - q16) / 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("spectra")
    sky = simulate_sky(root / "sky", SPECTRA_SKY, scheduler="processes")
    config = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.5, catalog_path=sky.catalog,
                         archive=str(sky.archive), output_dir=root / "run", read_in_place=True)
    summary = BatchPipeline(config).run_all()
    return sky, config, summary


def test_run_all_writes_spectra_and_sources(run):
    sky, config, summary = run
    spectra = pd.read_parquet(config.spectra_dir)
    sources = pd.read_parquet(config.sources_path)
    assert list(spectra.columns) == list(SPECTRUM_COLUMNS)
    assert list(sources.columns) == list(SOURCE_COLUMNS)
    assert summary.spectrum_rows == len(spectra) > 1000
    assert summary.variable == sources.variable.sum()
    # one row per source of the light-curve store; 17-digit ids survive exactly
    lightcurves = lightcurve_rows(config.output_dir)
    assert sorted(sources.targetid) == sorted(lightcurves.targetid.unique())
    assert set(sources.targetid) <= set(pd.read_parquet(sky.truth_sources).targetid)
    assert sources.targetid.dtype == np.int64 and spectra.targetid.dtype == np.int64
    assert not spectra.duplicated(["targetid", "detector", "channel"]).any()
    assert (spectra.wavelength >= spectra.wavelength_min).all() and (spectra.wavelength <= spectra.wavelength_max).all()
    field = pa.parquet.read_schema(next(config.spectra_dir.glob("*.parquet"))).field("flux")
    assert field.metadata[b"unit"] == b"uJy"


def test_constant_sources_channel_fluxes_follow_the_sed(run):
    sky, config, _ = run
    spectra = pd.read_parquet(config.spectra_dir)
    truth = pd.read_parquet(sky.truth_sources).set_index("targetid").loc[spectra.targetid]
    constant = (truth.amplitude == 0).to_numpy()
    sed = true_flux(truth, spectra.wavelength.to_numpy(), np.zeros(len(spectra)))
    good = constant & (spectra.flux / spectra.flux_error > 10).to_numpy()
    pull = ((spectra.flux - sed) / spectra.flux_error)[good]
    assert good.sum() > 1000 and spectra[good].n_obs.max() > 1
    median, sigma = robust(pull)
    assert abs(median) < 0.1
    assert 0.85 <= sigma <= 1.2


def test_variability_is_told_from_colour(run):
    sky, config, _ = run
    sources = pd.read_parquet(config.sources_path).set_index("targetid")
    truth = pd.read_parquet(sky.truth_sources).set_index("targetid").loc[sources.index]
    bright = sources.median_snr > 50
    varying = sources[bright & (truth.amplitude >= 0.1)]
    constant = sources[bright & (truth.amplitude == 0)]
    # the constant sources span steep and curved SEDs: colour alone must not look variable
    steep = truth.loc[constant.index]
    assert len(varying) >= 30 and len(constant) >= 80
    assert (steep.alpha.abs() > 1).sum() >= 20 and (steep.beta.abs() > 0.3).sum() >= 20
    assert varying.variable.mean() >= 0.9
    assert constant.variable.mean() <= 0.02
    # a test that ignores colour (χ² about one flat flux per source) flags most constant sources
    lc = lightcurve_rows(config.output_dir)[["targetid", "flux_total", "flux_total_error", "quality"]]
    lc = lc[lc.targetid.isin(constant.index) & (lc.quality == "")]
    w = 1 / lc.flux_total_error**2
    mean = (w * lc.flux_total).groupby(lc.targetid).sum() / w.groupby(lc.targetid).sum()
    chi2 = (w * (lc.flux_total - mean.reindex(lc.targetid).to_numpy()) ** 2).groupby(lc.targetid).sum()
    flat_p = p_value(chi2.to_numpy(), lc.groupby("targetid").size().to_numpy() - 1)
    assert (flat_p < SpectraConfig().false_positive_rate).mean() > 0.5


def test_light_curve_rows_match_the_injected_detections(run):
    """Every light-curve row joined with the simulator's record of that detection: the time is
    the exposure's middle, the flux the injected one within the row's own error."""
    sky, config, _ = run
    truth = pd.read_parquet(sky.truth_detections)
    lc = lightcurve_rows(config.output_dir)
    rows = lc.merge(truth, on=["targetid", "obs_id", "detector"], suffixes=("", "_true"), validate="one_to_one")
    assert len(rows) == len(lc) > 5000
    # MJD-AVG, not MJD-BEG (60 s off) nor the end: to 0.01 s
    np.testing.assert_allclose(rows.mjd, rows.mjd_true, rtol=0, atol=1e-7)
    np.testing.assert_allclose(rows.wavelength, rows.wavelength_true, rtol=0, atol=1e-9)
    good = rows[rows.quality == ""]
    for flux, low, high in (("flux_psf", 0.9, 1.1), ("flux_total", 0.85, 1.1)):  # aperture errors are ~5 % wide
        pull = (good[flux] - good.flux_true) / good[f"{flux}_error"]
        median, sigma = robust(pull)
        assert abs(median) < 0.1 and low <= sigma <= high, (flux, median, sigma)
    # magnitudes: of the PSF flux, with its error
    bright = good[good.flux_psf / good.flux_psf_error > 20]
    true_mag = -2.5 * np.log10(bright.flux_true * 1e-6 / 3631)  # AB: 3631 Jy
    median, sigma = robust((bright.mag_psf_ab - true_mag) / bright.mag_psf_ab_error)
    assert abs(median) < 0.1 and 0.9 <= sigma <= 1.1, (median, sigma)


def test_the_variability_test_is_calibrated_on_constant_sources(run):
    """For sources whose injected flux is constant, χ²/dof about the fitted SED centres on 1
    and the p-values are uniform: the false-positive rate is the one configured."""
    sky, config, _ = run
    sources = pd.read_parquet(config.sources_path).set_index("targetid")
    truth = pd.read_parquet(sky.truth_sources).set_index("targetid").loc[sources.index]
    constant = sources[(truth.amplitude == 0).to_numpy() & (sources.dof >= 10).to_numpy()]
    assert len(constant) > 150
    assert abs(np.median(constant.chi2_dof) - 1) < 0.1
    assert stats.kstest(constant.p_value, "uniform").pvalue > 0.01
    # the flagged constant sources: as many as the configured false-positive rate allows
    rate = SpectraConfig().false_positive_rate
    flagged = int(constant.variable.sum())
    assert stats.binomtest(flagged, len(constant), rate, alternative="greater").pvalue > 1e-3, flagged


def _points_and_errors(ax) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) of an axes' scatter points, and the half-lengths of its error bars by x."""
    (points,) = ax.collections[:1]
    (bars,) = [c for c in ax.containers if c.has_yerr]
    segments = np.array(bars.lines[2][0].get_segments())
    return points.get_offsets().data, (segments[:, 1, 1] - segments[:, 0, 1]) / 2


def test_light_curve_figures_show_the_rows_with_their_errors(run):
    """What the figure draws is the data: the rows' fluxes, their errors as bars over the
    points; the title says where the source is and the test's verdict; the normalised view's
    scatter about 1 is the variability test's χ²; one panel per detector."""
    sky, config, _ = run
    sources = pd.read_parquet(config.sources_path).set_index("targetid")
    truth = pd.read_parquet(sky.truth_sources).set_index("targetid").loc[sources.index]
    bright = sources[sources.median_snr > 30]
    varying = bright[bright.variable & (truth.loc[bright.index].amplitude > 0.2)].index[0]
    constant = bright[~bright.variable & (truth.loc[bright.index].amplitude == 0)].n_used.idxmax()
    for tid, verdict in ((varying, "variable (p = "), (constant, "constant (p = ")):
        rows = read_lightcurve(config.output_dir, tid)
        fig = draw_lightcurve(rows, source=sources.loc[tid])
        ax = fig.axes[0]
        xy, half = _points_and_errors(ax)
        np.testing.assert_allclose(xy, rows[["mjd", "flux_psf"]].to_numpy())
        np.testing.assert_allclose(half, rows.flux_psf_error, rtol=1e-6)
        assert ax.containers[0].lines[2][0].get_zorder() > ax.collections[0].get_zorder()  # bars over points
        assert fig.get_suptitle().startswith(f"{tid} · RA {rows.ra.iloc[0]:.5f}°, Dec {rows.dec.iloc[0]:+.5f}°")
        assert verdict in fig.get_suptitle()
        # normalised by the stored spectrum: pulls about 1
        # normalised by the smooth spectrum the test fits: the points' χ² is the test's
        xy, half = _points_and_errors(draw_lightcurve(rows, view="normalised").axes[0])
        good = np.isfinite(xy[:, 1])
        chi2 = np.sum(((xy[good, 1] - 1) / half[good]) ** 2)
        assert chi2 / sources.loc[tid, "dof"] == pytest.approx(sources.loc[tid, "chi2_dof"], rel=1e-6)
        # one panel per detector, each with that detector's rows only
        panels = [ax for ax in draw_lightcurve(rows, view="detector").axes if ax.get_visible() and ax.get_title()]
        assert [ax.get_title() for ax in panels] == [f"D{d}" for d in sorted(rows.detector.unique())]
        for ax in panels:
            mine = rows[rows.detector == int(ax.get_title()[1:])]
            np.testing.assert_allclose(_points_and_errors(ax)[0], mine[["mjd", "flux_psf"]].to_numpy())
    with pytest.raises(ValueError, match="view must be one of"):
        draw_lightcurve(rows, view="colour")


def _serial_spectrum(rows: pd.DataFrame, config: SpectraConfig) -> list[tuple]:
    """The binning written as a plain loop over measurements and channels."""
    table = channel_table()
    bins: dict[tuple, list] = {}
    column = "flux_psf" if config.flux_column == "auto" else config.flux_column  # the run measured PSF fluxes
    rows = rows.assign(f=rows[column], e=rows[f"{column}_error"])
    for r in rows.itertuples():
        if any(q in config.exclude_quality for q in str(r.quality).split(",")):
            continue
        if not (np.isfinite(r.f) and np.isfinite(r.e) and r.e > 0):
            continue
        best, best_d = None, np.inf
        for c in table.itertuples():
            distance = abs(r.wavelength - c.wavelength)
            if c.detector == r.detector and c.wl_min <= r.wavelength <= c.wl_max and distance < best_d:
                best, best_d = c, distance
        if best is not None:
            bins.setdefault((r.targetid, best.detector, best.subchan), []).append(r)
    out = []
    for (tid, det, ch), ms in bins.items():
        f = np.array([m.f for m in ms])
        w = 1 / np.array([m.e for m in ms]) ** 2
        lam = np.array([m.wavelength for m in ms])
        mean = np.sum(w * f) / np.sum(w)
        out.append((tid, det, ch, np.sum(w * lam) / np.sum(w), mean, 1 / np.sqrt(np.sum(w)), len(ms),
                    np.sum(w * (f - mean) ** 2)))
    return sorted(out)


def test_spectra_equal_a_serial_computation(run):
    _, config, _ = run
    ids = pd.read_parquet(config.sources_path).targetid.sample(25, random_state=2)
    for tid in ids:
        got = read_spectrum(config.output_dir, tid)
        want = _serial_spectrum(read_lightcurve(config.output_dir, tid), config.spectra)
        got = sorted(got[["targetid", "detector", "channel", "wavelength", "flux", "flux_error", "n_obs",
                          "chi2"]].itertuples(index=False, name=None))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a[:3] == b[:3] and a[6] == b[6]
            assert isinstance(a[0], (int, np.integer)) and a[0] == tid
            np.testing.assert_allclose(a[3:6], b[3:6], rtol=1e-12)
            np.testing.assert_allclose(a[7], b[7], rtol=1e-9, atol=1e-12)


def test_rerun_reuses_and_a_changed_config_recomputes(run, tmp_path):
    _, config, _ = run
    version = current_version(config.catalog_dir)
    again = BatchPipeline(config).run_all()
    assert again.partitions_rewritten == 0 and current_version(config.catalog_dir) == version
    strict = dataclasses.replace(config, spectra=SpectraConfig(false_positive_rate=0.2))
    done = BatchPipeline(strict).run_all()
    assert done.partitions_rewritten == done.partitions and done.measured == 0
    assert done.variable > pd.read_parquet(config.sources_path).shape[0] * 0.2 * 0.5
    # a distributed build of the same config equals the local one
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        local = pd.read_parquet(config.sources_path)
        build_catalog(config.per_image_dir, tmp_path / "catalog", spectra=strict.spectra, client=client)
        write_sources(tmp_path / "catalog", tmp_path / "sources.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sources.parquet"), local)
    BatchPipeline(config).run_all()


def test_cli_spectrum_and_plot(run, tmp_path):
    _, config, _ = run
    sources = pd.read_parquet(config.sources_path)
    tid = sources.sort_values("n_channels").targetid.iloc[-1]
    matplotlib.use("svg")  # the user's backend: plotting must leave it alone
    rc = main(["spectrum", str(tid), "--out", str(config.output_dir), "--csv", str(tmp_path / "s.csv"),
               "--plot", str(tmp_path / "s.png"), "--log-wavelength"])
    assert rc == 0 and matplotlib.get_backend() == "svg"
    table = pd.read_csv(tmp_path / "s.csv")
    assert len(table) == sources.set_index("targetid").n_channels[tid]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["spectrum", "12345", "--out", str(config.output_dir)]) == 1
    path = plot_spectrum(read_lightcurve(config.output_dir, tid), tmp_path / "computed.png")
    assert path.stat().st_size > 5000


def _rows(targetid, detector, wavelength, flux, error, quality="", obs="2026W01_1A_0100_1"):
    n = len(wavelength)
    df = pd.DataFrame({c: np.zeros(n) for c in COLUMNS})
    # aperture fluxes only, as with PhotometryConfig(psf_fit=False)
    return df.assign(targetid=np.int64(targetid), ra=150.0, dec=2.0, obs_id=[f"{obs}{k}" for k in range(n)],
                     band=f"D{detector}", filename="f.fits", quality=quality, flag=np.int32(0),
                     pipeline_version="6.5.7", release="qr2",
                     detector=np.int8(detector), n_bad=np.int16(0), mjd=61000.0 + np.arange(n),
                     wavelength=wavelength, flux_total=flux, flux_total_error=error, flux_psf=np.nan,
                     flux_psf_error=np.nan, mag_psf_ab=np.nan, mag_psf_ab_error=np.nan, psf_chi2=np.nan,
                     psf_corr_max=np.nan, psf_n_neighbours=np.int32(0), psf_quality=None, flux_model=np.nan,
                     flux_model_error=np.nan, mag_model_ab=np.nan, mag_model_ab_error=np.nan, model=None)


def test_sparse_and_flagged_sources_are_reported(tmp_path):
    one_image = _rows(39627000000000001, 2, [1.30], [100.0], [5.0])
    # D1 channel 4 (0.798-0.819 µm) once, channel 11 (0.942-0.967 µm) twice
    one_channel_once = _rows(39627000000000002, 1, [0.80, 0.95, 0.96], [50.0, 52.0, 51.0], [2.0, 2.0, 2.0])
    all_flagged = _rows(39627000000000003, 3, [1.8, 2.0], [10.0, 11.0], [1.0, 1.0], quality="edge")
    outside = _rows(39627000000000004, 3, [1.62], [10.0], [1.0])  # below D3's first channel
    nan_flux = _rows(39627000000000005, 4, [3.0, 3.1], [np.nan, 20.0], [1.0, 1.0])
    rows = pd.concat([one_image, one_channel_once, all_flagged, outside, nan_flux], ignore_index=True)
    per_image = tmp_path / "per_image"
    for k in range(3):
        write_per_image(rows.iloc[k::3][list(COLUMNS)], per_image / f"img{k}_D1.parquet", pa.int64())
    aggregate_lightcurves(per_image, tmp_path / "catalog", spectra=SpectraConfig())
    write_sources(tmp_path / "catalog", tmp_path / "sources.parquet")
    sources = pd.read_parquet(tmp_path / "sources.parquet").set_index("targetid")
    spectra = pd.read_parquet(tmp_path / "catalog" / "spectra")
    assert len(sources) == 5
    s = sources.loc[39627000000000001]
    assert (s.n_obs, s.n_used, s.n_channels, s.dof) == (1, 1, 1, 0) and np.isnan(s.p_value) and not s.variable
    one = spectra[spectra.targetid == 39627000000000001]
    assert (one.n_obs.tolist(), one.chi2.tolist(), one.flux.tolist()) == ([1], [0.0], [100.0])
    assert sources.loc[39627000000000002].n_channels == 2
    two = spectra[spectra.targetid == 39627000000000002].set_index("channel")
    assert two.n_obs.to_dict() == {4: 1, 11: 2} and two.chi2[4] == 0 and two.chi2[11] == pytest.approx(0.125)
    s = sources.loc[39627000000000003]
    assert (s.n_obs, s.n_used, s.n_channels) == (2, 0, 0) and not s.variable and np.isnan(s.median_snr)
    assert sources.loc[39627000000000004].n_used == 1 and sources.loc[39627000000000004].n_channels == 0
    assert sources.loc[39627000000000005].n_used == 1
    assert set(spectra.targetid) == {39627000000000001, 39627000000000002, 39627000000000005}
    assert read_spectrum(tmp_path, 39627000000000003).empty


@pytest.mark.parametrize("bad, field", [({"flux_column": "flux_psf2"}, "flux_column"),
                                        ({"exclude_quality": ["edgy"]}, "exclude_quality"),
                                        ({"knot_spacing": 0}, "knot_spacing"),
                                        ({"false_positive_rate": 1.5}, "false_positive_rate")])
def test_config_errors_name_the_field(bad, field):
    with pytest.raises(ValueError, match=f"SpectraConfig.{field}"):
        SpectraConfig(**bad)


def test_a_flux_column_the_run_lacks_is_a_clear_error(tmp_path):
    per_image = tmp_path / "per_image"
    write_per_image(_rows(39627000000000001, 2, [1.30, 1.31], [100.0, 99.0], [5.0, 5.0])[list(COLUMNS)],
           per_image / "img0_D2.parquet", pa.int64())
    with pytest.raises(ValueError, match="flux_column.*flux_psf.*psf_fit"):
        build_catalog(per_image, tmp_path / "catalog", spectra=SpectraConfig(flux_column="flux_psf"))
    assert build_catalog(per_image, tmp_path / "catalog", spectra=SpectraConfig()).spectrum_rows == 1  # "auto": flux_total
