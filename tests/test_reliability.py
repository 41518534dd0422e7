"""Fault injection: workers die, runs are interrupted, inputs are corrupt, users and archives
send hostile or broken things. Everything on loopback, every loop bounded."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from astropy.io import fits

import spxdask
from spxdask import PhotometryConfig
from spxdask.archive import FetchConfig, LocalArchive, RegionQuery, fetch
from spxdask.archive.query import load_summary
from spxdask.batch import BatchConfig, BatchPipeline, SpectraConfig, aggregate_lightcurves, run_extraction
from spxdask.batch.extract import IN_FLIGHT_PER_THREAD
from spxdask.catalog.versions import current_version
from spxdask.drizzle3d import Drizzle3DConfig, DrizzleCube, drizzle, load_cube
from spxdask.drizzle3d.grid import output_grid
from spxdask.drizzle3d.reduce import tree_partials
from spxdask.simulate import SimConfig, simulate_sky
from spxdask.testing.http_server import FileServer

from .conftest import lightcurve_rows
from .kills import killed_worker, wait_for, watched

SPXDASK = str(Path(sys.executable).with_name("spxdask"))


@pytest.fixture(scope="module")
def busy_sky(tmp_path_factory):
    """Enough work that a worker can be killed in the middle of it."""
    return simulate_sky(tmp_path_factory.mktemp("busy"), SimConfig(n_images=48, size=384, n_sources=400, seed=21,
                                                                   radius=0.5), scheduler="processes")


def test_worker_killed_during_extraction(busy_sky, tmp_path):
    catalog = pd.read_csv(busy_sky.catalog)
    clean = tmp_path / "clean" / "per_image"
    run_extraction(busy_sky.archive, catalog, PhotometryConfig(), clean)
    out = tmp_path / "killed" / "per_image"
    with killed_worker("photometry-", after=2) as (client, kill, progress):
        n = run_extraction(busy_sky.archive, catalog, PhotometryConfig(), out, client=client)
    assert kill.landed(progress) and kill.done < len(busy_sky.files), kill
    assert n == len(busy_sky.files)
    for f in sorted(clean.glob("*.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f.name), pd.read_parquet(f))


def test_images_go_to_the_cluster_through_a_bounded_window(busy_sky, tmp_path):
    """48 images on 2 worker threads: the scheduler never holds more than 4 per thread (a
    graph of every image would hold all 48), and every image is measured and recorded."""
    with watched("photometry-") as (client, progress):
        n = run_extraction(busy_sky.archive, pd.read_csv(busy_sky.catalog), PhotometryConfig(), tmp_path / "per_image",
                           client=client)
    assert n == len(busy_sky.files) == progress.done
    # (+2: a finished task is forgotten a moment after the next one is submitted)
    assert 0 < progress.peak <= IN_FLIGHT_PER_THREAD * 2 + 2 < len(busy_sky.files), progress.peak
    assert (pd.read_parquet(tmp_path / "manifest.parquet").status == "ok").sum() == n


def test_worker_killed_during_the_catalog_build(busy_sky, tmp_path):
    per_image = tmp_path / "per_image"
    run_extraction(busy_sky.archive, pd.read_csv(busy_sky.catalog), PhotometryConfig(), per_image)
    aggregate_lightcurves(per_image, tmp_path / "clean" / "catalog", spectra=SpectraConfig(), partition_rows=2000)
    # while a worker splits a per-image file into its partitions' shards, two of them split
    with killed_worker("catalog-split-", after=2) as (client, kill, progress):
        aggregate_lightcurves(per_image, tmp_path / "killed" / "catalog", spectra=SpectraConfig(), partition_rows=2000,
                              client=client)
    assert kill.landed(progress) and kill.done < len(busy_sky.files), kill
    pd.testing.assert_frame_equal(lightcurve_rows(tmp_path / "killed"), lightcurve_rows(tmp_path / "clean"))
    a = pd.read_parquet(tmp_path / "clean" / "catalog" / "spectra").sort_values(["targetid", "wavelength"], ignore_index=True)
    b = pd.read_parquet(tmp_path / "killed" / "catalog" / "spectra").sort_values(["targetid", "wavelength"], ignore_index=True)
    pd.testing.assert_frame_equal(a, b)


def test_worker_killed_during_the_drizzle_reduction(busy_sky):
    paths = [str(p) for p in busy_sky.files if "D2_" in p.name or p.name.split("_spx")[0].endswith("D2")]
    cfg = Drizzle3DConfig(150.1, 2.2, 30, 30, detector=2, split_every=2)
    grid = output_grid(cfg, 2)
    import dask
    (clean,) = dask.compute(tree_partials(paths, grid, cfg), scheduler="sync")
    with killed_worker("drizzle-", after=2) as (client, kill, progress):
        partial = client.compute(tree_partials(paths, grid, cfg)).result()
    assert kill.landed(progress) and kill.done < len(paths), kill
    a, b = DrizzleCube.from_partial(clean, grid, cfg), DrizzleCube.from_partial(partial, grid, cfg)
    # equal up to BLAS dot-product rounding in the zodi fit, which differs between processes
    np.testing.assert_allclose(b.flux_weighted, a.flux_weighted, rtol=1e-9, atol=1e-9 * np.abs(a.flux_weighted).max())
    np.testing.assert_array_equal(b.count_map, a.count_map)


def _measured(run: Path) -> int:
    return sum(not f.name.startswith(".") for f in (run / "per_image").glob("*.parquet"))


#: where the kill lands: a condition on the run's folder (and the number of images)
STAGES = {"after the first image": lambda run, n: _measured(run) >= 1,
          "halfway through the images": lambda run, n: _measured(run) >= n // 2,
          "during the catalog build": lambda run, n: any((run / ".catalog-versions").glob("v-*/*"))}


def _batch(sky, out: Path) -> list[str]:
    return [SPXDASK, "batch", "--catalog", str(sky.catalog), "--ra", "150.1", "--dec", "2.2", "--radius", "0.5",
            "--archive", str(sky.archive), "--out", str(out)]


@pytest.fixture(scope="module")
def clean_run(sky_qr2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "run"
    subprocess.run(_batch(sky_qr2, out), check=True, capture_output=True)
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_interrupted_batch_runs_converge(sky_qr2, clean_run, tmp_path, stage):
    n, run = len(sky_qr2.files), tmp_path / "run"
    args = _batch(sky_qr2, run)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert wait_for(lambda: STAGES[stage](run, n) or proc.poll() is not None), "the run never got there"
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run had ended before the kill"
    # the kill left work undone: images to measure, or a catalog not yet made
    if stage == "during the catalog build":
        assert _measured(run) == n and current_version(run / "catalog") is None
    else:
        assert _measured(run) < n
    # nothing partial under a final name: every Parquet file has its footer, every FITS its size
    for f in run.rglob("*.parquet"):
        if not any(part.startswith(".") for part in f.relative_to(tmp_path).parts):
            pq.read_metadata(f)
    for f in (run / "images").rglob("*.fits") if (run / "images").exists() else []:
        assert f.stat().st_size == next(sky_qr2.archive.rglob(f.name)).stat().st_size
    before = _measured(run)
    again = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    # each image measured once: the rerun measures exactly those the killed run had not
    assert int(re.search(r"images measured\s+(\d+)", again).group(1)) == n - before, again
    pd.testing.assert_frame_equal(lightcurve_rows(run), lightcurve_rows(clean_run))


# -- corrupt inputs ------------------------------------------------------------------------------
def _corrupt(path: Path, kind: str) -> None:
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "not FITS":
        path.write_text("<html><body>503 Service Unavailable</body></html>")
    else:
        with fits.open(path) as h:
            if kind == "missing HDU":
                del h["VARIANCE"]
            elif kind == "wrong shape":
                h["FLAGS"].data = h["FLAGS"].data[:, :50]
            elif kind == "all-NaN image":
                h["IMAGE"].data[:] = np.nan
            elif kind == "broken WCS-WAVE":
                h["WCS-WAVE"].data["Y"][0][:] = 7
            elif kind == "NaN variance, unflagged":
                h["VARIANCE"].data[::2, ::3] = np.nan
                h["FLAGS"].data[::2, ::3] = 0
            h.writeto(path, overwrite=True)


EXPECTED = {"truncated": "truncated", "not FITS": "not a readable FITS", "missing HDU": "missing HDU",
            "wrong shape": "share one 2-D shape", "all-NaN image": "no finite pixel", "broken WCS-WAVE": "bad WCS-WAVE"}


def test_corrupt_inputs_are_reported_and_the_rest_goes_on(sky_qr2, tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(sky_qr2.archive, archive)
    files = sorted(archive.rglob("*.fits"))
    kinds = list(EXPECTED) + ["NaN variance, unflagged"]
    victims = dict(zip(kinds, files))
    for kind, path in victims.items():
        _corrupt(path, kind)
    catalog = pd.read_csv(sky_qr2.catalog)
    n = run_extraction(archive, catalog, PhotometryConfig(), tmp_path / "per_image")
    manifest = pd.read_parquet(tmp_path / "manifest.parquet").set_index("image")
    for kind, text in EXPECTED.items():
        row = manifest.loc[str(victims[kind])]
        assert row.status == "failed" and text in row.error and victims[kind].name in row.error, (kind, row.error)
    assert n == len(files) - len(EXPECTED)
    # NaN variance on unflagged pixels: measured, those pixels treated as bad
    nan_var = manifest.loc[str(victims["NaN variance, unflagged"])]
    assert nan_var.status == "ok"
    rows = pd.read_parquet(nan_var.output).set_index("targetid")
    (tmp_path / "clean").mkdir()
    shutil.copy2(next(sky_qr2.archive.rglob(victims["NaN variance, unflagged"].name)), tmp_path / "clean")
    run_extraction(tmp_path / "clean", catalog, PhotometryConfig(), tmp_path / "clean" / "per_image")
    before = pd.read_parquet(tmp_path / "clean" / "per_image" / Path(nan_var.output).name).set_index("targetid")
    before = before.loc[rows.index]
    hit = rows.n_bad > before.n_bad
    assert (rows.n_bad >= before.n_bad).all() and hit.sum() > 5
    assert rows.quality[hit].str.contains("bad_pixels").all() and np.isfinite(rows.flux_error).all()


def test_unreadable_archive_files_are_named_in_the_run(sky_qr2, tmp_path):
    """A truncated file, a non-FITS .fits and a file without VARIANCE in the archive: the batch
    run names each in the manifest with its reason, counts them in the summary and the CLI
    prints the count; the other images are measured."""
    archive = tmp_path / "archive"
    shutil.copytree(sky_qr2.archive, archive)
    files = sorted(archive.rglob("*.fits"))
    victims = dict(zip(["truncated", "not FITS", "missing HDU"], files))
    for kind, path in victims.items():
        _corrupt(path, kind)
    config = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.5, catalog_path=sky_qr2.catalog,
                         archive=str(archive), output_dir=tmp_path / "run")
    summary = BatchPipeline(config).run_all()
    assert summary.unreadable == 3 and summary.images == len(files) - 3 and summary.failed == 0
    assert f"{'unreadable':<18}{3:>10}" in summary.table()
    manifest = pd.read_parquet(config.manifest_path).set_index("image")
    for kind, path in victims.items():
        row = manifest.loc[str(path)]
        assert row.status == "unreadable" and EXPECTED[kind] in row.error, (kind, row.error)
    assert (manifest.status == "ok").sum() == len(files) - 3
    listed = {row["url"]: row["error"] for row in load_summary(config.output_dir)["unreadable"]}
    assert set(listed) == {str(p) for p in victims.values()}
    assert all(EXPECTED[kind] in listed[str(path)] for kind, path in victims.items())
    # a rerun still says so; the CLI prints it
    assert BatchPipeline(config).run_all().unreadable == 3
    out = subprocess.run([SPXDASK, "batch", "--catalog", str(sky_qr2.catalog), "--ra", "150.1", "--dec", "2.2",
                          "--radius", "0.5", "--archive", str(archive), "--out", str(tmp_path / "cli")],
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"unreadable\s+3", out)


def _served(found, archive, server, n):
    """The first ``n`` observations of ``found`` with URLs on ``server`` (serving ``archive``)."""
    frame = found.frame.iloc[:n].copy()
    frame["url"] = [server.url + "/" + u[len(str(archive)) + 1:] for u in frame.url]
    return dataclasses.replace(found, frame=frame)


def test_fetch_budget_is_respected(sky_qr2, tmp_path):
    found = LocalArchive(sky_qr2.archive, index_path=tmp_path / "i.parquet").query(RegionQuery(circle=(150.1, 2.2, 1.0)))
    with FileServer(sky_qr2.archive) as server:
        server.add_faults("*", [503] * 1000)
        result = fetch(_served(found, sky_qr2.archive, server, 2).to_bag(), tmp_path / "images",
                       FetchConfig(retries=50, backoff=0.2, max_backoff=0.4, budget=2.0))
    assert (result.status == "failed").all() and result.error.str.contains("HTTP 503").all()
    assert (result.attempts < 50).all() and (result.attempts > 2).all()
    # every file's attempts, as the server saw them: each a request, none after its budget
    # (2 s from its first; 0.5 s for the answer to start on a loaded machine)
    for url, attempts in zip(result.url, result.attempts):
        times = [r.at for r in server.log if url.endswith(r.path)]
        assert len(times) == attempts and max(times) - min(times) < 2.0 + 0.5, (url, times)


def test_fetch_budget_starts_when_the_file_s_turn_comes(sky_qr2, tmp_path):
    """Three files that take 0.8 s each, one at a time, with a budget of 2 s per file: all
    arrive (the third waited 1.6 s in the queue, which is not its own time)."""
    found = LocalArchive(sky_qr2.archive, index_path=tmp_path / "i.parquet").query(RegionQuery(circle=(150.1, 2.2, 1.0)))
    with FileServer(sky_qr2.archive, slow_seconds=0.8) as server:
        server.add_faults("*", ["slow"] * 3)
        observations = _served(found, sky_qr2.archive, server, 3)
        result = fetch(observations.to_bag(partition_size=3), tmp_path / "images",
                       FetchConfig(concurrency=1, retries=0, budget=2.0))
    assert len(result) == 3 and (result.status == "ok").all(), result[["status", "error"]]


# -- safety ----------------------------------------------------------------------------------------
def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    evil.write_text(f"center_ra: !!python/object/apply:os.system ['touch {marker}']\ncenter_dec: 0\nwidth: 1\nheight: 1\n")
    with pytest.raises(yaml.YAMLError):
        Drizzle3DConfig.from_yaml_file(evil)
    assert not marker.exists()


def test_nothing_unpickles_or_evals_data():
    root = Path(spxdask.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for bad in ("pickle.load", "yaml.load(", "eval(", "exec(", "yaml.unsafe_load"):
            assert bad not in text, f"{bad} in {path}"


def test_secrets_in_storage_options_never_reach_the_outputs(sky_qr2, tmp_path):
    from spxdask.batch import BatchConfig, BatchPipeline
    from spxdask.testing.s3_server import S3Server

    secret = "SECRETKEYDONOTLEAK0123456789"
    with S3Server(sky_qr2.archive) as s3:
        options = {"key": "AKIATESTINGKEY", "secret": secret, "client_kwargs": s3.storage_options["client_kwargs"]}
        cfg = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog, archive=s3.url,
                          storage_options=options, read_in_place=True, output_dir=tmp_path)
        summary = BatchPipeline(cfg).run_all()
    assert summary.measured > 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_unreadable_archive_files_are_named_by_the_drizzle(sky_qr2, tmp_path):
    """Unreadable D2 files of an archive are in the D2 cube's rejected list (the reason, and
    N_REJECT) beside the images that contributed nothing; a D3 file is not; the CLI says how
    many were rejected; a later run without them leaves no stale list."""
    archive = tmp_path / "archive"
    shutil.copytree(sky_qr2.archive, archive)
    d2 = sorted(archive.rglob("*D2_spx_*.fits"))
    d3 = sorted(archive.rglob("*D3_spx_*.fits"))
    stray = d2[1].with_name(d2[1].name.replace("_0100_2D2", "_0101_2D2"))  # one more D2 file
    shutil.copyfile(d2[1], stray)
    d2.append(stray)
    victims = {"truncated": d2[0], "not FITS": stray, "missing HDU": d3[0]}
    for kind, path in victims.items():
        _corrupt(path, kind)
    config = Drizzle3DConfig(150.1, 2.2, 40, 40, detector=2, archive=str(archive), output_dir=tmp_path / "cube")
    cube = load_cube(drizzle(config)[2])
    rejected = pd.read_parquet(tmp_path / "cube" / "drizzle_D2_rejected.parquet").set_index("image")
    for kind in ("truncated", "not FITS"):
        reason = rejected.loc[str(victims[kind]), "reason"]
        assert reason.startswith("unreadable in the archive") and EXPECTED[kind] in reason, reason
    assert str(victims["missing HDU"]) not in rejected.index
    assert cube["header"]["N_REJECT"] == len(rejected) >= 2
    assert cube["header"]["N_INPUTS"] == len(d2)
    out = subprocess.run([SPXDASK, "drizzle", "--ra", "150.1", "--dec", "2.2", "--width", "40", "--height", "40",
                          "--detector", "2", "--archive", str(archive), "--out", str(tmp_path / "cli")],
                         capture_output=True, text=True, check=True).stdout
    assert re.search(rf"D2: {len(rejected)} image\(s\) rejected", out), out
    # repaired: a rerun lists nothing of them
    shutil.copyfile(next(p for p in sky_qr2.files if p.name == d2[0].name), d2[0])
    stray.unlink()
    drizzle(Drizzle3DConfig(150.1, 2.2, 40, 40, detector=2, archive=str(archive), output_dir=tmp_path / "cube",
                            overwrite=True))
    listed = tmp_path / "cube" / "drizzle_D2_rejected.parquet"
    assert not listed.exists() or not set(map(str, victims.values())) & set(pd.read_parquet(listed).image)


def test_ctrl_c_stops_a_run_in_one_line_and_the_rerun_resumes(busy_sky, tmp_path):
    """Ctrl-C printed 36-110 lines of worker tracebacks and could lose the summary: now one line,
    exit status 130, the summary of what the folder holds; the same command resumes."""
    out = tmp_path / "run"
    command = [SPXDASK, "batch", "--catalog", str(busy_sky.catalog), "--ra", "150.1", "--dec", "2.2", "--radius", "0.6",
               "--archive", str(busy_sky.archive), "--out", str(out)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: _measured(out) > 2 or run.poll() is not None, timeout=300)
    assert run.poll() is None, "the run ended before the interrupt could land on its work"
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to every process of the group
    stdout, stderr = run.communicate(timeout=120)
    written = len(list((out / "per_image").glob("*.parquet")))
    found = int(re.search(r"images found\s+(\d+)", stdout).group(1))
    assert run.returncode == 130
    assert stderr.strip().splitlines() == ["spxdask batch: interrupted; rerun the same command to resume"]
    assert "Traceback" not in stdout and 0 < written < found  # the interrupt landed on the extraction
    # the images whose results had come back are in the manifest and the summary (the workers
    # may write a few more files while the cluster stops: the rerun reuses them)
    recorded = (pd.read_parquet(out / "manifest.parquet").status == "ok").sum()
    assert 0 < recorded <= written and int(re.search(r"images measured\s+(\d+)", stdout).group(1)) == recorded
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert int(re.search(r"images measured\s+(\d+)", again.stdout).group(1)) == found - written
    assert len(list((out / "per_image").glob("*.parquet"))) == found
