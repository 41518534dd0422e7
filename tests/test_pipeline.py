"""BatchPipeline, load_catalog and the CLI, end to end on a simulated sky."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spxdask.archive import TooManyImagesError
from spxdask.batch import BatchConfig, BatchPipeline, CatalogError, load_catalog, load_query_summary, read_lightcurve, run_batch
from spxdask.drizzle3d import Drizzle3DConfig

from .conftest import lightcurve_rows

CENTER = dict(center_ra=150.1, center_dec=2.2, radius=0.3)


def _store(path):
    return lightcurve_rows(path)


def test_run_all_then_rerun_resumes(sky_qr2, tmp_path):
    cfg = BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive), output_dir=tmp_path,
                      export_csv=True, copy_images=True)
    summary = BatchPipeline(cfg).run_all()
    assert summary.images == summary.fetched == summary.measured > 0 and summary.failed == 0
    truth = pd.read_parquet(sky_qr2.truth_detections)
    store = _store(tmp_path)
    assert summary.rows == len(store) > 0
    assert set(store.filename) <= set(truth.filename)
    assert (tmp_path / "query.parquet").exists() and load_query_summary(tmp_path)["total_observations"] == summary.images
    assert len(list((tmp_path / "lightcurves_csv").glob("*.csv"))) == store.targetid.nunique()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "per_image").glob("*.parquet")}
    again = BatchPipeline(cfg).run_all()
    assert again.fetched == 0 and again.measured == 0
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "per_image").glob("*.parquet")}
    pd.testing.assert_frame_equal(_store(tmp_path), store)


def test_stages_run_alone_in_new_processes(sky_qr2, tmp_path):
    code = ("import sys; from spxdask.batch import BatchConfig, BatchPipeline; "
            f"cfg = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=r'{sky_qr2.catalog}', "
            f"archive=r'{sky_qr2.archive}', output_dir=r'{tmp_path}'); "
            "getattr(BatchPipeline(cfg), 'run_' + sys.argv[1])()")
    for stage in ("query", "download", "extract", "aggregate"):
        subprocess.run([sys.executable, "-c", code, stage], check=True, capture_output=True)
    one = run_batch(str(sky_qr2.catalog), 150.1, 2.2, 0.3, output_dir=str(tmp_path / "one"), archive=str(sky_qr2.archive))
    assert one.summary.measured > 0
    pd.testing.assert_frame_equal(_store(tmp_path).drop(columns="filename"), _store(tmp_path / "one").drop(columns="filename"))


def test_local_archives_are_read_in_place_unless_copied(sky_qr2, tmp_path):
    common = dict(**CENTER, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive))
    copied = BatchPipeline(BatchConfig(**common, output_dir=tmp_path / "copy", copy_images=True)).run_all()
    in_place = BatchPipeline(BatchConfig(**common, output_dir=tmp_path / "inplace")).run_all()
    assert not (tmp_path / "inplace" / "images").exists() and in_place.fetched == 0
    assert copied.fetched == copied.images > 0 and len(list((tmp_path / "copy" / "images").rglob("*.fits"))) == copied.images
    pd.testing.assert_frame_equal(_store(tmp_path / "copy"), _store(tmp_path / "inplace"))
    manifest = pd.read_parquet(tmp_path / "inplace" / "manifest.parquet")
    assert manifest.image.str.startswith(str(sky_qr2.archive)).all()  # measured where they are
    with pytest.raises(ValueError, match="BatchConfig.copy_images"):
        BatchConfig(**common, read_in_place=True, copy_images=True)
    # remote archives and TAP answers are downloaded unless asked otherwise
    assert not BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, archive="s3://bucket/spherex").in_place
    assert not BatchConfig(**CENTER, catalog_path=sky_qr2.catalog).in_place


def test_max_images_gate_stops_before_download(sky_qr2, tmp_path):
    cfg = BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive), output_dir=tmp_path,
                      max_images=2)
    with pytest.raises(TooManyImagesError, match="max_images=2"):
        BatchPipeline(cfg).run_all()
    assert not (tmp_path / "images").exists() and not (tmp_path / "query.parquet").exists()


# -- catalogs ---------------------------------------------------------------------------------
def test_load_catalog_keeps_ids_exact(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("targetid,ra,dec,mag\n39627000000000001,10.0,-5.0,17\n39627000000000002,10.1,-5.1,18\n")
    cat = load_catalog(path)
    assert cat.targetid.dtype == np.int64 and list(cat.targetid) == [39627000000000001, 39627000000000002]
    path.write_text("targetid,ra,dec\nJ1+2,10.0,-5.0\n007,10.1,-5.1\n")
    cat = load_catalog(path)
    assert list(cat.targetid) == ["J1+2", "007"] and pd.api.types.is_string_dtype(cat.targetid)


def test_load_catalog_is_vectorised(tmp_path):
    n = 10**6
    rng = np.random.default_rng(0)
    pd.DataFrame({"targetid": 39627000000000000 + np.arange(n), "ra": rng.uniform(0, 360, n),
                  "dec": rng.uniform(-90, 90, n)}).to_csv(tmp_path / "big.csv", index=False)
    cat = load_catalog(tmp_path / "big.csv")
    assert len(cat) == n and cat.targetid.iloc[-1] == 39627000000000000 + n - 1


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("targetid,ra\n1,2\n", r"missing column\(s\) \['dec'\]"),
    ("targetid,ra,dec\n", "no rows"),
    ("targetid,ra,dec\n1,10,5\n2,nan,5\n3,10,\n", "missing/NaN ra on line\\(s\\) 3; missing/NaN dec on line\\(s\\) 4"),
    ("targetid,ra,dec\n1,10,5\n2,abc,5\n", "non-numeric ra on line\\(s\\) 3"),
    ("targetid,ra,dec\n1,361,5\n2,10,-91\n", r"ra outside \[0, 360\] on line\(s\) 2; dec outside \[-90, 90\] on line\(s\) 3"),
    ("targetid,ra,dec\n1,10,5\n2,10,5\n1,11,5\n", r"duplicate targetid on line\(s\) 2, 4"),
])
def test_bad_catalogs_name_the_rows(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


@pytest.mark.parametrize("kwargs, field", [(dict(radius=0), "radius"), (dict(center_dec=95), "center_ra/center_dec"),
                                           (dict(coverage_mode="most"), "coverage_mode"), (dict(max_images=-1), "max_images"),
                                           (dict(mjd_range=(5, 1)), "mjd_range"), (dict(bands=["D9"]), None)])
def test_bad_config(kwargs, field, tmp_path):
    args = {**CENTER, "catalog_path": tmp_path / "c.csv", **kwargs}
    with pytest.raises(ValueError, match=f"BatchConfig.{field}" if field else "D9"):
        BatchConfig(**args)


# -- the CLI through its real entry point --------------------------------------------------------
SPXDASK = str(Path(sys.executable).with_name("spxdask"))  # the installed console script


def _cli(*args, check=True, env=None):
    proc = subprocess.run([SPXDASK, *map(str, args)], capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr + proc.stdout)
    return proc


@pytest.mark.parametrize("verb", ["demo", "simulate", "index", "query", "batch", "drizzle", "lightcurve", "spectrum"])
def test_every_verb_has_help(verb):
    assert "usage: spxdask " + verb in _cli(verb, "--help").stdout


def test_cli_end_to_end(tmp_path):
    sky = tmp_path / "sky"
    _cli("simulate", sky, "--images", 6, "--size", 128, "--sources", 60, "--seed", 4, "--radius", 0.15)
    assert (sky / "catalog.csv").exists() and len(list((sky / "archive").rglob("*.fits"))) == 6
    assert "indexed 6 files" in _cli("index", sky / "archive").stdout
    out = _cli("query", "--archive", sky / "archive", "--ra", 150.1, "--dec", 2.2, "--radius", 0.5,
               "--bands", "D2,D5", "--out", tmp_path / "q.parquet").stdout
    assert "2 observations" in out and (tmp_path / "q.parquet").exists()
    run = _cli("batch", "--catalog", sky / "catalog.csv", "--ra", 150.1, "--dec", 2.2, "--radius", 0.5,
               "--archive", sky / "archive", "--out", tmp_path / "run", "--scheduler", "local",
               "--neighbours", sky / "truth" / "sources.parquet")
    assert "images measured" in run.stdout
    assert np.isfinite(lightcurve_rows(tmp_path / "run").flux_psf).mean() > 0.99
    tid = lightcurve_rows(tmp_path / "run").targetid.iloc[0]
    table = _cli("lightcurve", tid, "--out", tmp_path / "run").stdout
    assert "flux_total" in table and len(table.splitlines()) == len(read_lightcurve(tmp_path / "run", tid)) + 1
    _cli("lightcurve", tid, "--out", tmp_path / "run", "--plot", tmp_path / "lc.png", "--spectrum", tmp_path / "sp.png")
    assert (tmp_path / "lc.png").stat().st_size > 5000 and (tmp_path / "sp.png").stat().st_size > 5000
    assert len(read_lightcurve(tmp_path / "run", tid)) > 0
    out = _cli("drizzle", "--ra", 150.1, "--dec", 2.2, "--width", 6, "--height", 6, "--detector", 2,
               "--archive", sky / "archive", "--out", tmp_path / "cube", "--spectrum", 150.1, 2.2,
               "--plot", tmp_path / "cube_spectrum.png").stdout
    assert "D2:" in out and (tmp_path / "cube" / "drizzle_D2.fits").exists()
    spectrum = pd.read_csv(next((tmp_path / "cube").glob("drizzle_D2_spectrum_*.csv")))
    assert list(spectrum.columns) == ["wavelength", "flux", "flux_error", "n_images", "flag", "edge"] and len(spectrum) == 17
    assert (tmp_path / "cube_spectrum.png").stat().st_size > 5000  # the file asked for (#30: not *_drizzle_D2.png)
    again = _cli("drizzle", "--ra", 150.1, "--dec", 2.2, "--width", 6, "--height", 6, "--detector", 2,
                 "--archive", sky / "archive", "--out", tmp_path / "cube", check=False)
    assert again.returncode == 2 and "exists" in again.stderr


def test_demo_runs_the_whole_job(tmp_path):
    """As on a fresh machine: numba's cache empty, so the workers compile the loops (ahead of
    the tasks, where no profiler samples the compiler's deep stacks: the profiles sent for the
    performance reports stay within what dask's sizeof can walk)."""
    run = _cli("demo", "--out", tmp_path / "demo", "--images", 18, "--sources", 150,
               env={"NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    out = run.stdout
    assert any((tmp_path / "numba").iterdir()), "the loops were not compiled into the empty cache"
    assert "Sizeof calculation" not in run.stderr  # profiles and task results are sized
    for name in ("images measured", "lightcurve_png", "spectrum_png", "cube_fits", "cube_slice_png"):
        assert name in out
    pngs = list((tmp_path / "demo").glob("*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 5000 for p in pngs)


def test_nothing_to_measure_is_an_ordinary_answer(sky_qr2, tmp_path):
    nowhere = BatchConfig(center_ra=10.0, center_dec=-40.0, radius=0.5, catalog_path=sky_qr2.catalog,
                          archive=str(sky_qr2.archive), output_dir=tmp_path / "nowhere")
    summary = BatchPipeline(nowhere).run_all()
    assert summary.images == 0 and summary.note == "no image covers the region"
    assert "no image covers the region" in summary.table()
    far = tmp_path / "far.csv"
    pd.DataFrame({"targetid": [1, 2], "ra": [10.0, 10.1], "dec": [-40.0, -40.1]}).to_csv(far, index=False)
    elsewhere = BatchConfig(**CENTER, catalog_path=far, archive=str(sky_qr2.archive), output_dir=tmp_path / "far",
                            read_in_place=True)
    summary = BatchPipeline(elsewhere).run_all()
    assert summary.images > 0 and summary.measured == summary.images and summary.rows == 0
    assert summary.note == "no catalog source falls in the images found"
    run = _cli("batch", "--catalog", sky_qr2.catalog, "--ra", 10, "--dec", -40, "--radius", 0.5,
               "--archive", sky_qr2.archive, "--out", tmp_path / "cli")
    assert run.returncode == 0 and "no image covers the region" in run.stdout


def test_a_run_mixing_releases_says_so_once(sky_qr2, sky_qr3, tmp_path):
    """One archive with the QR2 and QR3 files of the same sky: every row records its release
    and pipeline VERSION, and the summary says once how many sources mix releases."""
    archive = tmp_path / "archive"
    shutil.copytree(sky_qr2.archive, archive)
    shutil.copytree(sky_qr3.archive, archive, dirs_exist_ok=True)
    config = BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, archive=str(archive), output_dir=tmp_path / "run")
    summary = BatchPipeline(config).run_all()
    rows = lightcurve_rows(config.output_dir)[["targetid", "release", "pipeline_version"]]
    assert set(zip(rows.release, rows.pipeline_version)) == {("qr2", "6.5.7"), ("qr3", "7.0.1")}
    mixed = int((rows.groupby("targetid").release.nunique() > 1).sum())
    assert summary.mixed_releases == mixed > 0
    assert summary.table().count("more than one release") == 1


def test_inputs_are_checked_before_any_work(sky_qr2, tmp_path):
    bad = tmp_path / "typo.csv"
    bad.write_text("targetid,ra,dec\n1,150.1,2.2\n2,150.2,north\n")
    config = BatchConfig(**CENTER, catalog_path=bad, archive=str(sky_qr2.archive), output_dir=tmp_path / "run")
    with pytest.raises(CatalogError, match=r"typo\.csv: non-numeric dec on line\(s\) 3"):
        BatchPipeline(config).run_all()
    assert not (tmp_path / "run" / "query.parquet").exists()  # nothing queried, nothing fetched
    nowhere = BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, archive=str(tmp_path / "no-such"),
                          output_dir=tmp_path / "run2")
    with pytest.raises(FileNotFoundError, match="archive .*no-such: no such folder"):
        BatchPipeline(nowhere).run_all()
    with pytest.raises(ValueError, match="BatchConfig.tap_url must be an http"):
        BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, tap_url="irsa.ipac.caltech.edu/TAP")
    with pytest.raises(ValueError, match="Drizzle3DConfig.tap_url must be an http"):
        Drizzle3DConfig(150.1, 2.2, 10, 10, tap_url="ftp://irsa")
    run = _cli("batch", "--catalog", sky_qr2.catalog, "--ra", 150.1, "--dec", 2.2, "--radius", 0.5,
               "--archive", tmp_path / "no-such", "--out", tmp_path / "cli", check=False)
    assert run.returncode == 2 and run.stderr.strip().endswith("no-such: no such folder")
    assert "Traceback" not in run.stderr


def test_cli_errors_exit_non_zero(tmp_path):
    bad = _cli("batch", "--catalog", tmp_path / "none.csv", "--ra", 10, "--dec", 5, "--radius", 0.5,
               "--archive", tmp_path, "--out", tmp_path / "o", "--stage", "extract", check=False)
    assert bad.returncode != 0 and "error" in bad.stderr
    (tmp_path / "c.csv").write_text("targetid,ra,dec\n1,10,5\n")
    bad = _cli("batch", "--catalog", tmp_path / "c.csv", "--ra", 10, "--dec", 5, "--radius", 0.5,
               "--archive", tmp_path, "--out", tmp_path / "o", "--stage", "extract", "--neighbours",
               tmp_path / "deep.parquet", check=False)
    assert bad.returncode != 0 and "deep.parquet: neighbour catalog not found" in bad.stderr
    assert _cli("lightcurve", "123", "--out", tmp_path, check=False).returncode != 0
    assert _cli("query", "--ra", 10, "--dec", 5, "--radius", 0.5, "--out", tmp_path / "q", check=False).returncode == 2


def test_easy_slips_get_a_clear_sentence(sky_qr2, tmp_path):
    """Slips a new user makes, each refused or taken with a sentence naming the thing at fault."""
    with pytest.raises(TypeError, match="BatchConfig has no field 'centre_ra'; did you mean 'center_ra'"):
        BatchConfig(centre_ra=150.1, center_dec=2.2, radius=0.5, catalog_path=sky_qr2.catalog)
    with pytest.raises(TypeError, match="Drizzle3DConfig has no field 'detectors'; did you mean 'detector'"):
        Drizzle3DConfig(150.1, 2.2, 10, 10, detectors=2)
    with pytest.raises(ValueError, match=r"BatchConfig.center_ra must be a number, got '150.1' \(str\)"):
        BatchConfig(center_ra="150.1", center_dec=2.2, radius=0.5, catalog_path=sky_qr2.catalog)
    with pytest.raises(ValueError, match=r"Drizzle3DConfig.width must be a number, got '10'"):
        Drizzle3DConfig(150.1, 2.2, "10", 10)
    # band lists as the CLI takes them
    assert BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, bands="D1, d3").bands == ["D1", "D3"] == \
        BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, bands=["D1", 3]).bands
    # a file where a folder is needed: the API and the CLI say so before any work
    afile = tmp_path / "iamafile"
    afile.write_text("")
    with pytest.raises(ValueError, match="BatchConfig.output_dir is a file; give a folder"):
        BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, output_dir=afile)
    with pytest.raises(ValueError, match="Drizzle3DConfig.output_dir is a file"):
        Drizzle3DConfig(150.1, 2.2, 10, 10, output_dir=afile)
    run = _cli("batch", "--catalog", sky_qr2.catalog, "--ra", 150.1, "--dec", 2.2, "--radius", 0.5,
               "--archive", sky_qr2.archive, "--out", afile, check=False)
    assert run.returncode == 2 and "output_dir is a file" in run.stderr and "Traceback" not in run.stderr
    # a plot into a folder that does not exist yet
    from spxdask.batch.plot import plot_spectrum

    rows = pd.DataFrame({"targetid": [1, 1], "mjd": [1.0, 2.0], "wavelength": [1.0, 1.5], "detector": [1, 1],
                         "flux_total": [10.0, 11.0], "flux_total_error": [1.0, 1.0]})
    out = plot_spectrum(rows, tmp_path / "new" / "deeper" / "spec.png", column="flux_total",
                        spectrum=pd.DataFrame(columns=["detector"]))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_stage_run_alone_counts_what_the_run_holds(sky_qr2, tmp_path):
    """`--stage extract` after `--stage query` used to print `images found 0 ... rows 0`; and
    "sources" counted the input list's rows, not the sources measured."""
    config = BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive), output_dir=tmp_path)
    found = BatchPipeline(config).run_query()
    alone = BatchPipeline(config)
    alone.run_extract()
    assert alone.summary.images == len(found) > 0 and alone.summary.measured > 0
    assert alone.summary.targets == len(load_catalog(sky_qr2.catalog))
    last = BatchPipeline(config)
    last.run_aggregate()
    measured = pd.read_parquet(config.per_image_dir, columns=["targetid"]).targetid.nunique()
    assert last.summary.images == len(found) and last.summary.sources == measured <= alone.summary.targets
    assert last.summary.rows == len(pd.read_parquet(config.per_image_dir, columns=["targetid"])) > 0
    assert "sources measured" in last.summary.table()


def test_a_narrower_rerun_leaves_the_other_images_out(sky_qr2, tmp_path):
    """`--bands D2` into an existing run kept all images' rows in the catalog, silently: the
    outputs now hold exactly what the current query measures; the other per-image files stay
    for reuse, counted in the summary."""
    wide = BatchConfig(**CENTER, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive), output_dir=tmp_path)
    first = BatchPipeline(wide).run_all()
    everyone = lightcurve_rows(tmp_path)
    files = sorted(wide.per_image_dir.glob("*.parquet"))
    d2 = [f for f in files if f.stem.endswith("_D2")]
    assert set(everyone.detector) > {2} and 0 < len(d2) < len(files)
    narrow = BatchPipeline(BatchConfig.from_dict({**wide.to_dict(), "bands": ["D2"]})).run_all()
    rows = lightcurve_rows(tmp_path)
    assert set(rows.detector) == {2} and len(rows) == (everyone.detector == 2).sum()
    assert narrow.images == len(d2) and narrow.left_out == len(files) - len(d2) and narrow.measured == 0
    assert "left out of the catalog" in narrow.table()
    assert sorted(wide.per_image_dir.glob("*.parquet")) == files  # kept for reuse
    again = BatchPipeline(wide).run_all()  # the wide query back: nothing measured again, all rows back
    assert again.measured == 0 and again.left_out == 0 and again.rows == first.rows
    pd.testing.assert_frame_equal(lightcurve_rows(tmp_path), everyone)
