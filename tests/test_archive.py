"""Observations, the local archive index and its queries, and async fetching from a real HTTP
server on loopback with injected faults."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord

from spxdask.archive import observation as obs
from spxdask.archive.fetch import FetchConfig, destination, fetch
from spxdask.archive.local import LocalArchive, mirror_path
from spxdask.archive.query import RegionQuery, TooManyImagesError
from spxdask.spherex import L2File
from spxdask.testing.http_server import FileServer

from .conftest import drizzle_box


@pytest.fixture(scope="module")
def archive(sky_qr2, tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    shutil.copytree(sky_qr2.archive, root, dirs_exist_ok=True)
    a = LocalArchive(root)
    a.index(scheduler="sync")
    return a


def test_observation_round_trip(archive, tmp_path):
    found = archive.query(RegionQuery(circle=(150.1, 2.2, 1.0)))
    records = found.observations
    assert len(records) == len(found.frame) > 0
    obs.save(records, tmp_path / "q.parquet")
    assert obs.load(tmp_path / "q.parquet") == records
    assert obs.from_frame(obs.to_frame(records)) == records
    r = records[0]
    assert r.band == f"D{r.detector}" and r.filename.endswith(".fits") and r.corners.shape == (4, 2)


def test_index_reads_headers_only_and_is_incremental(sky_qr2, tmp_path):
    total = sum(p.stat().st_size for p in sky_qr2.files)
    with FileServer(sky_qr2.archive) as server:
        remote = LocalArchive(server.url, index_path=tmp_path / "index.parquet")
        table = remote.index(scheduler="sync")
        assert len(table) == len(sky_qr2.files) and table["error"].isna().all()
        first = server.bytes_sent
        assert first < 0.1 * total  # small files: most of the bytes are the PSF cube
        gets = sum(1 for r in server.log if r.method == "GET" and r.path.endswith(".fits"))
        remote.index(scheduler="sync")
        assert sum(1 for r in server.log if r.method == "GET" and r.path.endswith(".fits")) == gets  # nothing re-read
    local = LocalArchive(sky_qr2.archive, index_path=tmp_path / "local.parquet").index(scheduler="sync")
    pd.testing.assert_frame_equal(local.drop(columns="url"), table.drop(columns="url"), check_dtype=False)


def test_queries_see_files_added_and_removed_since_the_index(sky_qr2, tmp_path):
    root = tmp_path / "archive"
    first, *rest = sky_qr2.files
    for path in rest:
        target = root / path.relative_to(sky_qr2.archive)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    archive = LocalArchive(root)
    everywhere = RegionQuery(circle=(150.1, 2.2, 2.0))
    assert len(archive.query(everywhere)) == len(rest)
    added = root / first.relative_to(sky_qr2.archive)
    added.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(first, added)
    assert len(archive.query(everywhere)) == len(sky_qr2.files)  # a new file is seen
    added.unlink()
    assert len(archive.query(everywhere)) == len(rest)  # a removed one is gone


def _expected(archive, test):
    """An independent check of each footprint: the pixel grid and astropy separations."""
    out = set()
    for row in archive.load_index().itertuples():
        with L2File(archive.url_of(row.url)) as l2:
            ny, nx = l2.shape
            t = np.linspace(-0.5, nx - 0.5, 400)
            edge_x = np.concatenate([t, np.full_like(t, nx - 0.5), t[::-1], np.full_like(t, -0.5)])
            edge_y = np.concatenate([np.full_like(t, -0.5), t, np.full_like(t, ny - 0.5), t[::-1]])
            edge = SkyCoord(*l2.wcs.all_pix2world(edge_x, edge_y, 0), unit="deg")
            verdict = test(l2, edge)
            if verdict is not None:
                out.add((row.obs_id, row.detector, verdict))
    return out


def _inside(l2, ra, dec):
    x, y = l2.wcs.all_world2pix(ra, dec, 0)
    ny, nx = l2.shape
    return -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5


@pytest.mark.parametrize("coverage", ["any", "full"])
@pytest.mark.parametrize("radius", [0.05, 0.2])
def test_circle_queries_match_independent_geometry(archive, coverage, radius):
    ra, dec = 150.12, 2.23
    centre = SkyCoord(ra, dec, unit="deg")

    def test(l2, edge):
        d = edge.separation(centre).deg.min()
        if abs(d - radius) < 2e-3:
            return None  # too close to call with a sampled edge
        inside = _inside(l2, ra, dec)
        return bool(inside or d <= radius) if coverage == "any" else bool(inside and d >= radius)

    expected = _expected(archive, test)
    found = archive.query(RegionQuery(circle=(ra, dec, radius), coverage=coverage))
    got = {(o.obs_id, o.detector) for o in found.observations}
    decided = {(o, d) for o, d, v in expected}
    assert {(o, d) for o, d, v in expected if v} == got & decided
    assert len(decided) >= len(archive.load_index()) - 2


def test_point_and_box_queries(archive):
    ra, dec = 150.05, 2.15
    expected = _expected(archive, lambda l2, edge: _inside(l2, ra, dec))
    got = {(o.obs_id, o.detector) for o in archive.query(RegionQuery(point=(ra, dec))).observations}
    assert got == {(o, d) for o, d, v in expected if v}
    # a box: INTERSECTS(POLYGON) finds images touching it, not only those holding its centre
    box = drizzle_box(ra, dec, 0.3, 0.2)
    by_box = {(o.obs_id, o.detector) for o in archive.query(RegionQuery(polygon=box)).observations}
    assert got < by_box
    far = {(o.obs_id, o.detector) for o in archive.query(RegionQuery(polygon=drizzle_box(10, -40, 1, 1))).observations}
    assert far == set()


def test_filters_and_gate(archive):
    everything = archive.query(RegionQuery(circle=(150.1, 2.2, 2.0)))
    n = len(everything)
    assert n == len(archive.load_index())
    d3 = archive.query(RegionQuery(circle=(150.1, 2.2, 2.0), bands=(3,)))
    assert set(d3.frame.detector) == {3} and len(d3) == (everything.frame.detector == 3).sum()
    mjds = np.sort(everything.frame.mjd.unique())
    early = archive.query(RegionQuery(circle=(150.1, 2.2, 2.0), mjd_range=(mjds[0] - 1, mjds[0] + 1)))
    assert (early.frame.mjd <= mjds[0] + 1).all() and 0 < len(early) < n
    assert len(archive.query(RegionQuery(circle=(150.1, 2.2, 2.0), collections=("qr3",)))) == 0
    assert len(archive.query(RegionQuery(circle=(150.1, 2.2, 2.0), collections=("wide", "qr2")))) == n
    with pytest.raises(TooManyImagesError, match=f"{n} images, more than max_images=3"):
        archive.query(RegionQuery(circle=(150.1, 2.2, 2.0), max_images=3))
    bag = everything.to_bag(partition_size=4)
    assert bag.npartitions == -(-n // 4)
    assert sorted(o.url for o in bag.compute()) == sorted(everything.frame.url)


@pytest.mark.parametrize("bad", [dict(circle=(400, 0, 1)), dict(circle=(0, 0, -1)), dict(point=(0, 95)),
                                 dict(), dict(point=(0, 0), circle=(0, 0, 1)), dict(point=(0, 0), coverage="most")])
def test_bad_queries(bad):
    with pytest.raises(ValueError):
        RegionQuery(**bad)


def test_newest_version_wins(archive, tmp_path):
    root = tmp_path / "archive"
    shutil.copytree(archive.root, root)
    old = sorted(root.rglob("*.fits"))[0]
    newer_dir = old.parent.parent.parent / "l2b-v25-2026-100" / old.parent.name
    newer_dir.mkdir(parents=True)
    newer = newer_dir / old.name.replace(old.parent.parent.name, "l2b-v25-2026-100")
    shutil.copy(old, newer)
    a = LocalArchive(root)
    a.index(scheduler="sync")
    found = a.query(RegionQuery(circle=(150.1, 2.2, 2.0))).frame
    assert len(found) == len(archive.load_index())
    mine = found[found.url.str.endswith(newer.name) | found.url.str.endswith(old.name)]
    assert list(mine.version) == ["l2b-v25-2026-100"]


def test_mirror_rule():
    key = "qr2/level2/2025W51_1A/l2b-v21-2025-354/3/level2_2025W51_1A_0684_2D3_spx_l2b-v21-2025-354.fits"
    assert mirror_path("https://irsa.ipac.caltech.edu/ibe/data/spherex/" + key, "/m") == "/m/" + key
    assert mirror_path("s3://nasa-irsa-spherex/" + key, "/m") == "/m/" + key
    with pytest.raises(ValueError, match="outside the mirror"):
        mirror_path("https://irsa.ipac.caltech.edu/ibe/data/spherex/../../etc/passwd", "/m")
    with pytest.raises(ValueError, match="not an IRSA"):
        mirror_path("https://example.org/x.fits", "/m")


# -- fetching ---------------------------------------------------------------------------------
FAST = FetchConfig(concurrency=3, retries=4, backoff=0.02, max_backoff=0.1, budget=30, timeout=2.0)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _remote_set(archive, server):
    """The archive's observations as served over HTTP, with md5 checksums as IRSA gives them."""
    found = archive.query(RegionQuery(circle=(150.1, 2.2, 2.0)))
    frame = found.frame.copy()
    frame["checksum"] = [_md5(Path(u)) for u in frame.url]
    frame["url"] = [server.url + "/" + u[len(archive.root) + 1:] for u in frame.url]
    return dataclasses.replace(found, frame=frame)


def _same_bytes(result, archive):
    for row in result.itertuples():
        source = Path(archive.root) / row.url.split("/", 3)[3]
        assert _md5(Path(row.path)) == _md5(source)


def test_fetch_downloads_verifies_and_resumes(archive, tmp_path):
    with FileServer(archive.root) as server:
        found = _remote_set(archive, server)
        result = fetch(found.to_bag(partition_size=4), tmp_path / "images", FAST)
        assert (result.status == "ok").all() and len(result) == len(found)
        _same_bytes(result, archive)
        for row in result.itertuples():
            assert row.path.startswith(str(tmp_path / "images" / f"D{row.detector}"))
        assert not list((tmp_path / "images").rglob(".*"))
        sent = server.bytes_sent
        again = fetch(found.to_bag(), tmp_path / "images", FAST)
        assert (again.status == "skipped").all() and server.bytes_sent == sent
        # a partial file under the final name is redone
        victim = result.path.iloc[0]
        with open(victim, "r+b") as f:
            f.truncate(1000)
        third = fetch(found.to_bag(), tmp_path / "images", FAST)
        assert (third.status == "ok").sum() == 1 and (third.status == "skipped").sum() == len(found) - 1
        _same_bytes(third, archive)


@pytest.mark.parametrize("faults", [[500, 502], [503, 504, 500], [429], ["reset"], ["truncate"], ["short"],
                                    ["corrupt"], ["slow"]])
def test_fetch_survives_transient_faults(archive, tmp_path, faults):
    with FileServer(archive.root, slow_seconds=4.0) as server:
        found = _remote_set(archive, server)
        first = found.frame.url.iloc[0][len(server.url) + 1:]
        server.add_faults(first, faults)
        result = fetch(found.to_bag(), tmp_path / "images", FAST)
        assert (result.status == "ok").all(), result[["status", "error"]]
        row = result[result.url.str.endswith(first)].iloc[0]
        assert row.attempts == len(faults) + 1
        _same_bytes(result, archive)


def test_fetch_reports_what_cannot_be_had(archive, tmp_path):
    with FileServer(archive.root) as server:
        found = _remote_set(archive, server)
        urls = found.frame.url
        server.add_faults(urls.iloc[0][len(server.url) + 1:], [500] * 10)
        server.add_faults(urls.iloc[1][len(server.url) + 1:], [404])
        frame = found.frame.copy()
        frame.loc[2, "checksum"] = "0" * 32
        frame.loc[3, "url"] = server.url + "/qr2/nowhere.fits"
        result = fetch(dataclasses.replace(found, frame=frame).to_bag(), tmp_path / "images", FAST)
    result = result.set_index(result.url)
    assert result.loc[urls.iloc[0], "status"] == "failed" and "HTTP 500" in result.loc[urls.iloc[0], "error"]
    assert result.loc[urls.iloc[0], "attempts"] == FAST.retries + 1
    assert result.loc[urls.iloc[1], "status"] == "failed" and result.loc[urls.iloc[1], "attempts"] == 1
    assert "md5 mismatch" in result.loc[urls.iloc[2], "error"]
    assert "not found" in result.loc[server.url + "/qr2/nowhere.fits", "error"]
    assert (result.status == "ok").sum() == len(result) - 4
    assert not [p for p in (tmp_path / "images").rglob("*") if p.is_file() and p.name.startswith(".")]


@pytest.mark.parametrize("url", ["https://h/x/../../../../etc/passwd.fits", "https://h/%2e%2e/evil.fits",
                                 "https://h/a/..fits", "/abs/olute/../../x.fits", "https://h/dir/"])
def test_hostile_names_stay_in_the_folder(tmp_path, url):
    o = obs.Observation("2025W01_1A_0001_1/../../x", 3, 0, 0, 0, 1, 2, (0.0,) * 8, url)
    path = destination(o, tmp_path)
    assert path.parent == tmp_path / "D3" and path.name.endswith(".fits") and ".." not in path.name


@pytest.mark.parametrize("layout", ["qr2", "qr3"])
def test_remote_files_read_in_place_fetch_only_the_rows_around_the_sources(tmp_path, layout):
    """Photometry of a file over HTTP reads the rows around its sources, the zodi fit's sample
    rows, the PSF and the headers: a few sources in a band of rows cost a fraction of the file,
    and every column equals the local file's (QR3: tile-compressed FLAGS read by row tiles)."""
    from spxdask.photometry import measure_image
    from spxdask.simulate import SimConfig, simulate_sky

    sky = simulate_sky(tmp_path / "sky", SimConfig(n_images=1, size=1024, n_sources=20, detectors=(2,), layout=layout),
                       scheduler="sync")
    path = sky.files[0]
    with L2File(path) as l2:
        ra, dec = l2.wcs.all_pix2world([100.0, 500.3, 900.7, 620.2], [300.0, 310.4, 305.2, 700.9], 0)
        sources = pd.DataFrame({"targetid": [1, 2, 3, 4], "ra": ra, "dec": dec})
        local = measure_image(l2, sources)
    with FileServer(path.parent) as server, L2File(f"{server.url}/{path.name}") as remote:
        opened = server.bytes_sent
        in_place = measure_image(remote, sources)
        read = server.bytes_sent
    pd.testing.assert_frame_equal(in_place, local)
    assert np.isfinite(in_place.flux_psf).all() and (in_place.quality == "").all()
    size = path.stat().st_size
    image_bytes = 4 * 1024 * 1024  # one float32 HDU
    assert read - opened < 0.45 * size, (read, size)
    # what must be read: 2 bands of ~11 rows in 3-4 HDUs, plus the PSF
    assert read - opened > 3 * 20 * image_bytes / 1024


def test_a_drizzle_names_the_files_it_could_not_download(archive, tmp_path):
    from spxdask.drizzle3d import Drizzle3DConfig, drizzle, load_cube

    d2 = sorted(p for p in Path(archive.root).rglob("*D2_spx_*.fits"))
    with FileServer(archive.root) as server:
        lost = d2[0].relative_to(archive.root).as_posix()
        LocalArchive(server.url, index_path=tmp_path / "archive_index.parquet").index()  # the drizzle's index
        server.add_faults(lost, [404] * 3)
        cubes = drizzle(Drizzle3DConfig(150.1, 2.2, 40, 40, detector=2, archive=server.url, output_dir=tmp_path))
    rejected = pd.read_parquet(tmp_path / "drizzle_D2_rejected.parquet").set_index("image")
    reason = rejected.loc[f"{server.url}/{lost}", "reason"]
    assert reason.startswith("download failed: not found")
    assert load_cube(cubes[2])["header"]["N_INPUTS"] == len(d2)
    # the result names them too (and is still the reference's {detector: path})
    assert dict(cubes) == cubes.cubes == {2: tmp_path / "drizzle_D2.fits"}
    assert dict(cubes.rejected[2]) == rejected["reason"].to_dict()


def test_an_archive_is_only_read(sky_qr2, tmp_path):
    """batch, query and drizzle wrote spxdask_index.parquet into the archive folder, so a
    read-only mount (a team's shared mirror) failed with [Errno 30]: the index now lives in the
    user's cache (or where --index / archive_index says), and the next run reuses it."""
    import dask

    from spxdask.batch import BatchConfig, BatchPipeline
    from spxdask.cli import main
    from spxdask.drizzle3d import Drizzle3DConfig, drizzle

    archive = tmp_path / "mirror"
    shutil.copytree(sky_qr2.archive, archive)
    before = {p: p.stat().st_mtime_ns for p in archive.rglob("*")}
    with dask.config.set({"spxdask.cache_dir": str(tmp_path / "cache")}):
        first = BatchPipeline(BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog,
                                          archive=str(archive), output_dir=tmp_path / "run", report=False)).run_all()
        (index,) = (tmp_path / "cache" / "archive-index").glob("*.parquet")
        assert LocalArchive(archive).index_path == index
        stamp = index.stat().st_mtime_ns
        assert main(["query", "--archive", str(archive), "--ra", "150.1", "--dec", "2.2", "--radius", "0.3",
                     "--out", str(tmp_path / "q.parquet")]) == 0
        cubes = drizzle(Drizzle3DConfig(150.1, 2.2, 6, 6, detector=2, archive=str(archive), output_dir=tmp_path / "cube"))
        assert index.stat().st_mtime_ns == stamp  # the archive did not change: the index was reused, not rewritten
        mine = tmp_path / "my-index.parquet"
        assert main(["query", "--archive", str(archive), "--ra", "150.1", "--dec", "2.2", "--radius", "0.3",
                     "--out", str(tmp_path / "q2.parquet"), "--index", str(mine)]) == 0 and mine.exists()
    assert first.measured > 0 and 2 in cubes
    assert {p: p.stat().st_mtime_ns for p in archive.rglob("*")} == before  # nothing written, nothing touched
