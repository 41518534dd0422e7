"""Survey-scale catalogs and long runs: extraction against the catalog's size (10^4, 10^7,
10^8 rows, a few hundred inside the images) and against the number of images (1,000 and
10,000 in one run); one dense full-size frame. The baseline, in the same run, is the way the
engine worked before: the whole catalog in memory, one k-d tree of it scattered to every
worker, every image submitted at once."""

from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spxdask import PhotometryConfig
from spxdask.archive.local import observation_of
from spxdask.batch import extract_images
from spxdask.photometry import measure_image
from spxdask.simulate import SimConfig, make_catalog, plan_survey, simulate_sky, write_image
from spxdask.spherex import L2File
from spxdask.targets import open_targets

from . import PeakMemory, Result, register

SIZES = (10**4, 10**7, 10**8)
COUNTS = (1_000, 10_000)
#: the baseline holds the catalog in every worker: beyond this it does not fit this machine
BASELINE_MAX_ROWS = 10**7


def _catalog(path: Path, rows: int, inside: pd.DataFrame, seed: int = 0) -> None:
    """``rows`` rows as Parquet: the sources ``inside`` the images, the rest all over the sky
    except within 10 deg of them; written a piece at a time."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([("targetid", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        writer.write_table(pa.Table.from_pandas(inside[["targetid", "ra", "dec"]], schema=schema, preserve_index=False))
        left = rows - len(inside)
        for start in range(0, left, 5_000_000):
            k = min(5_000_000, left - start)
            dec = np.degrees(np.arcsin(rng.uniform(-1, np.sin(np.radians(-10)), k)))
            writer.write_table(pa.table({"targetid": np.arange(start, start + k) + 10**15,
                                         "ra": rng.uniform(0, 360, k), "dec": dec}, schema=schema))


def _images(sky) -> list:
    out = []
    for path in sorted(sky.archive.rglob("*.fits")):
        with L2File(path) as l2:
            out.append(observation_of(l2, str(path)))
    return out


def _measured(images: list, catalog, folder: Path, *, read_first: Path | None = None) -> dict:
    """Extraction on a fresh 2-worker cluster (warmed up: the kernels compiled): seconds and
    peaks. ``read_first``: the baseline's catalog file, read whole on the client, in the time."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        extract_images(images[:2], pd.DataFrame({"targetid": [1], "ra": [0.0], "dec": [0.0]}), PhotometryConfig(),
                       folder / "warm" / "per_image", client=client)
        with PeakMemory(client) as peaks:
            t0 = time.perf_counter()
            if read_first is not None:
                catalog = pd.read_parquet(read_first)
            n = extract_images(images, catalog, PhotometryConfig(), folder / "per_image", client=client)
            seconds = time.perf_counter() - t0
    assert n == len(images)
    return {"s": seconds, "worker GiB": max(peaks.peak.values()) / 2**30,
            "client+scheduler GiB": peaks.scheduler / 2**30}


def _catalog_size(tmp: Path) -> list[Result]:
    sky = simulate_sky(tmp / "sky", SimConfig(n_images=36, size=256, n_sources=400, seed=1, radius=0.5))
    inside = pd.read_csv(sky.catalog)
    images = _images(sky)
    out, figures = [], {}
    for rows in SIZES:
        path = tmp / f"cat-{rows}.parquet"
        _catalog(path, rows, inside)
        t0, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        targets = open_targets(path, cache=tmp / f"run-{rows}" / "targets")
        layout_s = time.perf_counter() - t0
        layout_gib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 2**20
        mine = figures[rows] = _measured(images, targets, tmp / f"run-{rows}")
        base = (_measured(images, None, tmp / f"base-{rows}", read_first=path) if rows <= BASELINE_MAX_ROWS
                else None)
        extra = {"layout s (once per file)": round(layout_s, 1), "layout peak growth GiB": round(layout_gib, 2),
                 "pixels": len(targets.pixels),
                 **{f"{k} spxdask": round(v, 3) for k, v in mine.items() if k != "s"}}
        if base:
            extra.update({f"{k} baseline": round(v, 3) for k, v in base.items() if k != "s"})
        out.append(Result("catalogs", f"{rows:.0e} rows, 36 images 256^2", mine["s"],
                          "whole catalog scattered" if base else "", base["s"] if base else None, extra))
        path.unlink()
    small, large = figures[SIZES[0]], figures[SIZES[-1]]
    out[-1].extra.update({f"x of 1e4 run, {k}": round(large[k] / small[k], 2) for k in small})
    return out


def _all_at_once(client, images: list, catalog: pd.DataFrame, folder: Path) -> None:
    """The baseline: every image's task submitted at once (one task per image, as before the
    bounded window), the targets scattered once."""
    import functools
    import uuid

    from spxdask.batch.extract import _extract
    from spxdask.targets import MemoryTargets

    folder.mkdir(parents=True)
    targets = client.scatter(MemoryTargets(catalog), broadcast=True)
    measure = functools.partial(_extract, out_dir=str(folder), config=PhotometryConfig(), tid_type=pa.int64(),
                                skip_existing=True, run=uuid.uuid4().hex)
    rows = client.gather(client.map(measure, images, targets=targets, neighbours=None, pure=False))
    assert all(r["status"] == "ok" for r in rows)


def _image_count(tmp: Path) -> list[Result]:
    """1,000 and 10,000 image records in one run, over 100 distinct small QR3 files (each
    record its own obs_id and file name, so its own task, output file and manifest record; the
    files stay in the page cache):
    the scheduler's peak and the time per image beyond the tasks' own."""
    from distributed import Client, LocalCluster

    sky = simulate_sky(tmp / "many", SimConfig(n_images=100, size=128, n_sources=200, seed=2, radius=0.4,
                                               layout="qr3", detectors=(1, 2)))
    catalog = pd.read_csv(sky.catalog)
    files = _images(sky)
    out = []
    links = tmp / "links"
    links.mkdir()
    for count in COUNTS:
        # each record its own file name (a link to one of the 100 files): the manifest keeps one
        # record per file, so records sharing a file would replace each other's (and their times)
        images = []
        for k in range(count):
            link = links / f"{count}-{k}.fits"
            link.symlink_to(files[k % len(files)].url)
            images.append(replace(files[k % len(files)], obs_id=f"{files[k % len(files)].obs_id}x{k}", url=str(link)))
        figures = {}
        for way in ("spxdask", "baseline"):
            with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
                    Client(cluster) as client:
                extract_images(files[:4], catalog, PhotometryConfig(), tmp / f"warm-{way}-{count}" / "per_image",
                               client=client)
                with PeakMemory(client) as peaks:
                    t0 = time.perf_counter()
                    folder = tmp / f"{way}-{count}" / "per_image"
                    if way == "spxdask":
                        assert extract_images(images, catalog, PhotometryConfig(), folder, client=client) == count
                    else:
                        _all_at_once(client, images, catalog, folder)
                    figures[way] = (time.perf_counter() - t0, peaks.scheduler / 2**30, max(peaks.peak.values()) / 2**30)
        seconds, scheduler, worker = figures["spxdask"]
        tasks = float(pd.read_parquet(tmp / f"spxdask-{count}" / "manifest.parquet")["seconds"].sum())
        out.append(Result("catalogs", f"{count} images 128^2, 2 workers", seconds, "every image submitted at once",
                          figures["baseline"][0], {
                              "client+scheduler peak GiB": round(scheduler, 3),
                              "client+scheduler peak GiB baseline": round(figures["baseline"][1], 3),
                              "worker peak GiB": round(worker, 3), "task ms/image": round(1e3 * tasks / count, 1),
                              "overhead ms/image": round(1e3 * (seconds * 2 - tasks) / count, 1)}))
    first, last = out
    key = "client+scheduler peak GiB"
    last.extra[f"{key} x of {COUNTS[0]}"] = round(last.extra[key] / first.extra[key], 2)
    last.extra[f"{key} baseline x of {COUNTS[0]}"] = round(last.extra[f"{key} baseline"] / first.extra[f"{key} baseline"], 2)
    return out


def _dense_frame(tmp: Path) -> list[Result]:
    """One 2040^2 frame, 100,000 catalog sources in it, measured (aperture + joint PSF fit) in
    one process; its peak memory."""
    # no minimum separation: the simulator draws such a sky pair by pair
    cfg = SimConfig(n_images=1, size=2040, n_sources=130_000, detectors=(2,), radius=1.6, seed=9, min_separation_arcsec=0)
    catalog = make_catalog(cfg)
    spec = plan_survey(cfg, catalog)[0]
    truth = write_image(spec, cfg, tmp)
    inside = catalog[catalog.targetid.isin(truth.targetid)][["targetid", "ra", "dec"]].iloc[:100_000]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()  # the first call compiles nothing: the loops are cached on disk
    with L2File(tmp / spec.relpath) as l2:
        rows = measure_image(l2, inside, PhotometryConfig())
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return [Result("catalogs", f"dense frame 2040^2, {len(inside)} sources", seconds, extra={
        "rows": len(rows), "us/source": round(1e6 * seconds / len(inside), 1),
        "process peak GiB": round(peak / 2**20, 2), "peak growth GiB": round((peak - before) / 2**20, 2),
        "cores": os.cpu_count()})]


def _in_tmp(case):
    def run() -> list[Result]:
        with tempfile.TemporaryDirectory(dir=os.environ.get("SPXDASK_BENCH_TMP")) as tmp:
            return case(Path(tmp))
    return run


register("catalog-size")(_in_tmp(_catalog_size))
register("image-count")(_in_tmp(_image_count))
register("dense-frame")(_in_tmp(_dense_frame))
