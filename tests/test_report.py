"""The run's report: one self-contained page, checked against the run's own files (each
figure by the facts it records, not its pixels) and rendered in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from matplotlib.image import imread

from spxdask.batch import BatchConfig, BatchPipeline, read_lightcurve, read_spectrum
from spxdask.catalog.versions import PARTITIONS, current_version
from spxdask.cli import main
from spxdask.simulate import SimConfig, simulate_sky

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of a sky seen often enough for a variability test (the demo's, smaller), with one
    archive file that cannot be read and one image that fails its photometry (IMAGE all NaN)."""
    root = tmp_path_factory.mktemp("report")
    sky = simulate_sky(root / "sky", SimConfig(n_images=30, size=256, n_sources=250, seed=1, radius=0.5))
    archive = sky.archive
    files = sorted(archive.rglob("*.fits"))
    files[0].write_bytes(files[0].read_bytes()[:50_000])
    with fits.open(files[1]) as h:
        h["IMAGE"].data[:] = np.nan
        h.writeto(files[1], overwrite=True)
    config = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.6, catalog_path=sky.catalog,
                         archive=str(archive), output_dir=root / "run")
    summary = BatchPipeline(config).run_all()
    return config, summary, files[:2]


class _Figures(HTMLParser):
    """The page's figures (name → facts), tables by name and the count cells."""

    def __init__(self):
        super().__init__()
        self.facts: dict[str, dict] = {}
        self.counts: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._cell: str | None = None
        self._table: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.facts[a["data-name"]] = json.loads(a["data-facts"])
        elif tag == "td" and "data-count" in a:
            self._cell = a["data-count"]
        elif tag == "table" and "data-name" in a:
            self._table = a["data-name"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        self._cell = None if tag == "td" else self._cell

    def handle_data(self, data):
        if self._cell:
            self.counts[self._cell] = data
        elif self._table and self.tables[self._table]:
            self.tables[self._table][-1].append(data)


def _page(config) -> tuple[str, _Figures]:
    text = (config.output_dir / "report.html").read_text()
    parsed = _Figures()
    parsed.feed(text)
    return text, parsed


def test_the_page_states_the_runs_own_counts(run):
    config, summary, (unreadable, failed) = run
    _, page = _page(config)
    manifest = pd.read_parquet(config.manifest_path)
    parts = pd.read_parquet(current_version(config.catalog_dir) / PARTITIONS)
    want = {"images found": len(pd.read_parquet(config.output_dir / "query.parquet")),
            "unreadable": int((manifest.status == "unreadable").sum()), "images measured": int((manifest.status == "ok").sum()),
            "failures": int((manifest.status == "failed").sum()), "sources": len(pd.read_parquet(config.sources_path)),
            "rows": int(parts.n_rows.sum()), "spectrum rows": int(parts.n_spectrum_rows.sum()),
            "variable": int(parts.n_variable.sum())}
    assert {k: int(v.replace(",", "")) for k, v in page.counts.items()} == want
    # the faults are there, and they are the summary's
    assert want["unreadable"] == summary.unreadable == 1 and want["failures"] == summary.failed == 1
    assert want["images found"] == summary.images and want["rows"] == summary.rows > 0
    listed = {row[1]: row[2] for row in page.tables["failures"][1:]}
    assert set(listed) == {str(unreadable), str(failed)}
    assert "truncated" in listed[str(unreadable)] and "no finite pixel" in listed[str(failed)]


def test_the_page_references_nothing_on_the_network(run):
    config, _, _ = run
    text, _ = _page(config)
    assert not re.findall(r"""(?:src|href|action)\s*=\s*["'](?!data:)""", text, flags=re.I)
    assert not re.search(r"url\(|@import|<script|<link|<iframe|<object", text, flags=re.I)
    assert "http://" not in text and "https://" not in text
    assert text.count('src="data:image/png;base64,') == len(_page(config)[1].facts) == 6


def test_each_figure_shows_what_the_run_holds(run):
    config, _, _ = run
    _, page = _page(config)
    query = pd.read_parquet(config.output_dir / "query.parquet")
    sources = pd.read_parquet(config.sources_path)
    manifest = pd.read_parquet(config.manifest_path)
    rows = pd.concat([pd.read_parquet(f) for f in sorted(config.per_image_dir.glob("*.parquet"))], ignore_index=True)
    f = page.facts
    assert f["sky"]["footprints"] == {f"D{d}": int(n) for d, n in query.detector.value_counts().sort_index().items()}
    assert (f["sky"]["sources_drawn"], f["sky"]["n_obs_max"], f["sky"]["density_map"]) == (
        len(sources), int(sources.n_obs.max()), False)
    assert (f["time"]["images"], f["time"]["mjd_min"], f["time"]["mjd_max"]) == (len(query), query.mjd.min(), query.mjd.max())
    assert f["time"]["days_with_images"] == np.floor(query.mjd).nunique()
    # photometry: the whole of a small run is the sample
    assert (f["photometry"]["rows_sampled"], f["photometry"]["files_sampled"]) == (
        len(rows), len(list(config.per_image_dir.glob("*.parquet"))))
    good = (rows.flux_psf > 0) & (rows.flux_psf_error > 0)
    assert f["photometry"]["median_snr"] == pytest.approx(float((rows.flux_psf / rows.flux_psf_error)[good].median()))
    flags = rows.quality.fillna("")
    assert f["photometry"]["quality"]["none"] == int((flags == "").sum())
    for reason in ("edge", "bad_pixels"):
        assert f["photometry"]["quality"].get(reason, 0) == int(flags.str.split(",").apply(lambda r: reason in r).sum())
    # variability: the most significant variable sources, each with all its measurements
    variable = sources[sources.variable].sort_values("p_value", kind="stable")
    assert f["variability"]["variable"] == len(variable) > 0
    assert f["variability"]["shown"] == [str(t) for t in variable.targetid.head(4)]
    for tid in variable.targetid.head(4):
        assert f["variability"]["points"][str(tid)] == len(read_lightcurve(config.output_dir, tid))
    # spectra: the brightest sources, each with its channels
    bright = sources.nlargest(4, "median_snr").targetid
    assert sorted(f["spectra"]["shown"]) == sorted(str(t) for t in bright)
    assert f["spectra"]["channels"] == {str(t): len(read_spectrum(config.output_dir, t)) for t in bright}
    # performance: the recorded stages, and every image timed
    record = yaml.safe_load((config.output_dir / "run.yaml").read_text())
    assert set(f["performance"]["stages"]) == set(record["summary"]["seconds"]) - {"total"} >= {"query", "extract", "aggregate"}
    assert f["performance"]["images_timed"] == int(manifest.seconds.notna().sum())


@pytest.mark.browser
def test_the_page_renders_in_a_real_browser(run, tmp_path):
    config, _, _ = run
    page = config.output_dir / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9"]  # nothing may be fetched
    shot = tmp_path / "page.png"
    done = subprocess.run([CHROMIUM, *flags, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    inked = (pixels < 0.9).any(axis=2)
    assert 0.05 < inked.mean() < 0.9  # text and figures, not a blank page
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200  # the figures' colours
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "images measured" in dom.stdout and dom.stdout.count("<img") == 6


def test_the_cli_writes_it_and_the_run_records_itself(run, tmp_path, capsys):
    config, summary, _ = run
    out = tmp_path / "elsewhere.html"
    assert main(["report", str(config.output_dir), "--out", str(out)]) == 0
    assert out.read_text().count("<figure") == 6 and str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2 and "not the folder of a batch run" in capsys.readouterr().err
    record = yaml.safe_load((config.output_dir / "run.yaml").read_text())
    assert record["config"]["catalog_path"] == str(config.catalog_path)
    assert record["summary"]["measured"] == summary.measured and record["summary"]["failed"] == summary.failed
    assert record["versions"]["spxdask"] and record["versions"]["dask"]


def test_info_says_what_a_run_holds(run, capsys):
    config, summary, _ = run
    assert main(["info", str(config.output_dir)]) == 0
    out = capsys.readouterr().out
    said = {line[:18].strip(): line[18:].strip() for line in out.splitlines()}
    assert said["images measured"] == f"{summary.measured:,}" and said["failures"] == f"{summary.failed:,}"
    assert said["sources"] == f"{len(pd.read_parquet(config.sources_path)):,}"
    assert said["per-image files"] == f"{len(list(config.per_image_dir.glob('*.parquet'))):,}"
    assert said["catalog"] == current_version(config.catalog_dir).name and said["report"] == "report.html"
    assert f"targets {config.catalog_path}" in out and "time extract" in out
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("spxdask 0.")


def test_the_switch_leaves_the_report_out(run, tmp_path):
    config, _, _ = run
    quiet = BatchConfig.from_dict({**config.to_dict(), "output_dir": str(tmp_path / "quiet"), "report": False})
    BatchPipeline(quiet).run_all()
    assert (tmp_path / "quiet" / "run.yaml").exists() and not (tmp_path / "quiet" / "report.html").exists()


def test_a_large_run_is_drawn_as_a_healpix_density_map(tmp_path):
    """Beyond 50,000 sources the sky figure counts them per HEALPix pixel, and draws the pixels."""
    from astropy import units as u
    from cdshealpix.nested import lonlat_to_healpix

    from spxdask.report import figures
    from spxdask.report.facts import RunFacts

    rng = np.random.default_rng(4)
    n = 60_000
    sources = pd.DataFrame({"targetid": np.arange(n), "ra": rng.uniform(150, 152, n), "dec": rng.uniform(1, 3, n),
                            "n_obs": rng.integers(1, 9, n)})
    empty = pd.DataFrame({"obs_id": [], "detector": [], "mjd": [], "footprint": []})
    facts = RunFacts(tmp_path, {}, {}, empty, pd.DataFrame(), sources, n, pd.DataFrame(), 0, pd.DataFrame())
    _, shown = figures.sky(facts)
    assert shown["density_map"] and shown["sources_counted"] == n
    order = shown["healpix_order"]
    cells = lonlat_to_healpix(sources.ra.to_numpy() * u.deg, sources.dec.to_numpy() * u.deg, order)
    assert shown["healpix_pixels"] == len(np.unique(cells)) <= figures.MAX_CELLS
    assert order == 12 or len(np.unique(lonlat_to_healpix(sources.ra.to_numpy() * u.deg,
                                                          sources.dec.to_numpy() * u.deg, order + 1))) > figures.MAX_CELLS
