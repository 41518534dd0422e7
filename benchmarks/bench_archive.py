"""Observations: fetching 50 full-size files from the loopback HTTP server against a plain
aiohttp download loop in the same run; indexing 1,000 files over HTTP, bytes read against bytes
stored; photometry of a remote file read in place (ranged reads of the rows around the
sources), bytes read per image at 100 and 20,000 sources against the file size and its time
against the same file downloaded whole first."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
import fsspec
import numpy as np
import pandas as pd

from spxdask.archive import FetchConfig, LocalArchive, ObservationSet, fetch
from spxdask.archive.observation import SCHEMA
from spxdask.photometry import measure_image
from spxdask.simulate import SimConfig, simulate_sky
from spxdask.spherex import L2File
from spxdask.testing.http_server import FileServer

from . import Result, register


def _copies(source: Path, root: Path, n: int) -> list[Path]:
    """``n`` hard links of one L2 file under distinct IRSA-style names."""
    out = []
    for i in range(n):
        obs = f"2026W01_1A_{i:04d}_1"
        path = root / "qr2" / "level2" / "2026W01_1A" / "l2b-v21-2026-031" / "2" / f"level2_{obs}D2_spx_l2b-v21-2026-031.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, path)
        out.append(path)
    return out


async def _plain_loop(urls: list[str], dest: Path, concurrency: int = 4) -> None:
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one(i, url):
            async with gate, session.get(url) as r:
                r.raise_for_status()
                with open(dest / f"{i}.fits", "wb") as f:
                    async for chunk in r.content.iter_chunked(2**20):
                        f.write(chunk)
        await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))


def _in_place(path: Path, size: int) -> list[Result]:
    """Photometry of one file over HTTP: read in place vs downloaded whole, then measured."""
    out = []
    rng = np.random.default_rng(1)
    with FileServer(path.parent) as server, tempfile.TemporaryDirectory() as tmp:
        url = f"{server.url}/{path.name}"
        with L2File(path) as l2:
            wcs = l2.wcs
        for n in (100, 20_000):
            ra, dec = wcs.all_pix2world(rng.uniform(10, 2030, n), rng.uniform(10, 2030, n), 0)
            sources = pd.DataFrame({"targetid": np.arange(n), "ra": ra, "dec": dec})
            times, read = {"in place": [], "download": []}, 0
            for _ in range(3):
                before = server.bytes_sent
                t0 = time.perf_counter()
                with L2File(url) as l2:
                    measure_image(l2, sources)
                times["in place"].append(time.perf_counter() - t0)
                read = server.bytes_sent - before
                t0 = time.perf_counter()
                local = Path(tmp) / path.name
                fsspec.filesystem("http").get(url, str(local))
                with L2File(local) as l2:
                    measure_image(l2, sources)
                times["download"].append(time.perf_counter() - t0)
            out.append(Result("archive", f"photometry of a remote file read in place (HTTP), {n:,} sources",
                              min(times["in place"]), "download whole, then measure", min(times["download"]),
                              {"bytes read / file size": f"{read / size:.3f}", "MB read": round(read / 1e6, 1)}))
    return out


@register("archive")
def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sky = simulate_sky(tmp / "one", SimConfig(n_images=1, size=2040, n_sources=50, detectors=(2,)), scheduler="sync")
        size = sky.files[0].stat().st_size
        root = tmp / "served"
        files = _copies(sky.files[0], root, 1000)
        out = _in_place(sky.files[0], size)
        with FileServer(root) as server:
            remote = LocalArchive(server.url, index_path=tmp / "index.parquet")
            t0 = time.perf_counter()
            table = remote.index()
            t_index = time.perf_counter() - t0
            read = server.bytes_sent
            assert len(table) == len(files)
            out.append(Result("archive", "index 1,000 full-size files over HTTP", t_index,
                              extra={"bytes read / stored": f"{read / (size * len(files)):.4%}"}))
            # the copies share one header (one obs_id), so take the index rows as they are
            frame = table.iloc[:50].assign(url=[remote.url_of(u) for u in table.url.iloc[:50]])[SCHEMA.names]
            found = ObservationSet(frame.astype({"detector": "int8"}), None, server.url)
            urls = list(frame.url)
            # alternate the two, each into an empty folder after a sync, so neither pays for
            # the other's write-back
            t_plain, t_fetch = [], []
            for _ in range(2):
                for name in ("plain", "images"):
                    shutil.rmtree(tmp / name, ignore_errors=True)
                    (tmp / name).mkdir()
                    os.sync()
                    t0 = time.perf_counter()
                    if name == "plain":
                        asyncio.run(_plain_loop(urls, tmp / name))
                        t_plain.append(time.perf_counter() - t0)
                    else:
                        result = fetch(found.to_bag(partition_size=50), tmp / name, FetchConfig(concurrency=4))
                        t_fetch.append(time.perf_counter() - t0)
                        assert (result.status == "ok").all()
            t_plain, t_fetch = min(t_plain), min(t_fetch)
        out.append(Result("archive", "fetch 50 full-size files (HTTP, 4 at a time)", t_fetch, "plain aiohttp loop", t_plain,
                          {"MB/s": round(50 * size / t_fetch / 1e6, 1)}))
        return out
