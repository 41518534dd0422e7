"""IRSA-style TAP queries through pyvo against a real DaCHS service on loopback (set up by
spxdask/testing/dachs/setup.sh, which `make test` and .ci/run run first)."""

from __future__ import annotations

import re
import shutil

import dask
import pandas as pd
import pytest

from spxdask.archive import LocalArchive, RegionQuery, TooManyImagesError
from spxdask.archive.fetch import FetchConfig, fetch
from spxdask.archive.irsa import IrsaArchive, TapError, adql
from spxdask.batch import BatchConfig, BatchPipeline
from spxdask.testing import tap
from spxdask.testing.faults import ServiceFront
from spxdask.testing.http_server import FileServer

from .conftest import drizzle_box, lightcurve_rows

pytestmark = pytest.mark.tap  # every test here talks to the DaCHS service (root to set up)


@pytest.fixture(scope="module")
def served(sky_qr2, tmp_path_factory):
    """The simulated archive under an IRSA-like tree, served over HTTP and published in DaCHS."""
    root = tmp_path_factory.mktemp("irsa")
    data = root / "ibe" / "data" / "spherex"
    shutil.copytree(sky_qr2.archive, data)
    local = LocalArchive(data)
    local.index(scheduler="sync")
    plane, artifact = tap.rows_from_archive(local)
    url = tap.publish(plane, artifact)
    with FileServer(root) as server:
        yield {"local": local, "tap": IrsaArchive(url, data_root=server.url + "/ibe/data/spherex/", backoff=0.05),
               "server": server, "plane": plane, "artifact": artifact, "url": url}


def _ids(found):
    return sorted(zip(found.frame.obs_id, found.frame.detector))


QUERIES = [
    RegionQuery(circle=(150.12, 2.23, 0.05)),
    RegionQuery(circle=(150.12, 2.23, 0.2)),
    RegionQuery(circle=(150.12, 2.23, 0.05), coverage="full"),
    RegionQuery(point=(150.05, 2.15)),
    RegionQuery(polygon=drizzle_box(150.05, 2.15, 0.3, 0.2)),
    RegionQuery(circle=(150.1, 2.2, 1.0), bands=(1, 3)),
    RegionQuery(circle=(150.1, 2.2, 1.0), collections=("wide",)),
    RegionQuery(circle=(150.1, 2.2, 1.0), collections=("qr3",)),
]


@pytest.mark.parametrize("q", QUERIES, ids=range(len(QUERIES)))
def test_tap_answers_like_the_local_archive(served, q):
    via_tap = served["tap"].query(q)
    assert _ids(via_tap) == _ids(served["local"].query(q))
    if len(via_tap):
        row = via_tap.frame.iloc[0]
        assert row.url.startswith(served["server"].url + "/ibe/data/spherex/qr2/level2/")
        assert len(row.checksum) == 32 and row.size > 0 and row.version.startswith("l2b-v21")
        assert row.collection == "spherex_qr2"


def test_a_region_without_coverage_is_an_empty_answer(served, tmp_path):
    """A region nothing covers: zero rows with the full schema, through the API and the CLI."""
    far = RegionQuery(circle=(10.0, -40.0, 0.1))
    found = served["tap"].query(far)
    assert len(found) == 0 and list(found.frame.columns) == list(served["local"].query(far).frame.columns)
    found.save(tmp_path)
    from spxdask.cli import main

    assert main(["query", "--tap", served["url"], "--ra", "10", "--dec", "-40", "--radius", "0.1",
                 "--out", str(tmp_path / "q.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "q.parquet")) == 0


def test_mjd_filter_and_gate(served):
    everything = served["tap"].query(RegionQuery(circle=(150.1, 2.2, 1.0)))
    first = everything.frame.mjd.min()
    early = served["tap"].query(RegionQuery(circle=(150.1, 2.2, 1.0), mjd_range=(first - 0.5, first + 0.5)))
    assert 0 < len(early) < len(everything) and (early.frame.mjd <= first + 0.5).all()
    with pytest.raises(TooManyImagesError, match="max_images=2"):
        served["tap"].query(RegionQuery(circle=(150.1, 2.2, 1.0), max_images=2))


def test_overflowing_sync_query_goes_async(served):
    small = IrsaArchive(served["url"], data_root="x/", sync_maxrec=3)
    q = RegionQuery(circle=(150.1, 2.2, 1.0))
    big = small.execute(adql(q))
    assert len(big) == len(served["plane"]) > 3
    assert len(small._run_async(adql(q))) == len(big)


def test_a_large_answer_is_asked_in_time_windows(served):
    """An answer over ``sync_maxrec`` rows is counted, then asked in time windows none of
    which overflows: the same observations as one query, no async job, no row twice. (The
    sky has two exposures of six detectors: no window can hold fewer than six rows.)"""
    q = RegionQuery(circle=(150.1, 2.2, 1.0))
    whole = served["tap"].query(q)
    with ServiceFront(served["url"]) as front:
        small = IrsaArchive(front.url_of(served["url"]), data_root=served["tap"].data_root, sync_maxrec=7)
        pieces = small.query(q)
        asked = [r for r in front.log if r.path.endswith("/sync")]
    assert len(whole) > 7
    pd.testing.assert_frame_equal(pieces.frame, whole.frame)
    # the overflowing query, the count, then 2 x ceil(n / 7) windows; nothing async
    assert len(asked) == 2 + 2 * -(-len(whole) // 7)
    assert not any(r.path.endswith("/async") for r in front.log)


def test_tap_errors_are_clear(served):
    with pytest.raises(TapError, match="refused the query"):
        served["tap"].execute("SELECT nonsense FROM spherex.nowhere")
    dead = IrsaArchive("http://127.0.0.1:9/tap", retries=2, backoff=0.01)
    with pytest.raises(TapError, match="127.0.0.1:9"):
        dead.query(RegionQuery(point=(150.1, 2.2)))


def test_newest_version_and_hostile_rows(served, tmp_path):
    plane, artifact = served["plane"].copy(), served["artifact"].copy()
    # an older processing of the first file, and a row whose uri tries to leave the folder
    old = plane.iloc[[0]].assign(planeid=9000, provenance_version="l2b-v20-2025-300")
    old_art = artifact.iloc[[0]].assign(planeid=9000, uri=artifact.uri.iloc[0].replace("l2b-v21", "l2b-v20"))
    evil = plane.iloc[[1]].assign(planeid=9001, obs_publisher_did="ivo://irsa.ipac/spherex_qr2?../../evil/D2")
    evil_art = artifact.iloc[[1]].assign(planeid=9001, uri="../../../../etc/passwd")
    tap.publish(pd.concat([plane, old, evil]), pd.concat([artifact, old_art, evil_art]))
    try:
        found = served["tap"].query(RegionQuery(circle=(150.1, 2.2, 1.0)))
        first = found.frame[found.frame.obs_id == plane.obs_publisher_did.iloc[0].split("?")[1].split("/")[0]]
        assert not first.url.str.contains("l2b-v20").any()
        result = fetch(found.to_bag(), tmp_path / "images", FetchConfig(retries=0))
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert all(p.parent.parent == tmp_path / "images" for p in written)
        assert (result.status == "failed").sum() == 1 and (result.status == "ok").sum() == len(result) - 1
    finally:
        tap.publish(plane, artifact)


def test_batch_pipeline_through_tap_and_http(served, sky_qr2, tmp_path):
    with dask.config.set({"spxdask.irsa.data_root": served["server"].url + "/ibe/data/spherex/"}):
        cfg = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog,
                          tap_url=served["url"], output_dir=tmp_path / "tap")
        summary = BatchPipeline(cfg).run_all()
    local = BatchPipeline(BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog,
                                      archive=str(served["local"].root), output_dir=tmp_path / "local")).run_all()
    assert summary.images == local.images and summary.fetched == summary.images and summary.failed == 0
    a = lightcurve_rows(tmp_path / "tap")
    b = lightcurve_rows(tmp_path / "local")
    pd.testing.assert_frame_equal(a, b)


def _created_jobs(front: ServiceFront) -> list[int]:
    """The answers to the async job creations that reached the front."""
    return [r.status for r in front.log if r.method == "POST" and r.path == "/tap/async"]


def test_what_may_pass_is_retried_and_nothing_else(served):
    """Through a counting front: a 503 of the sync query sends it async, a 503 of the job's
    creation is retried; a job that ends in ERROR is created once, its message raised at once;
    a service that answers 503 forever is asked ``retries + 1`` times, then named."""
    q = RegionQuery(circle=(150.1, 2.2, 1.0))
    with ServiceFront(served["url"]) as front:
        archive = IrsaArchive(front.url_of(served["url"]), data_root="x/", retries=3, backoff=0.01)
        front.add_faults("tap/sync", [503])
        front.add_faults("tap/async", [503])
        assert len(archive.execute(adql(q))) == len(served["plane"])
        assert _created_jobs(front) == [503, 303]
        front.log.clear()
        with pytest.raises(TapError, match=r"async job ERROR: .*(division|zero)"):
            archive._run_async("SELECT TOP 1 1/0 AS x FROM spherex.plane")
        assert _created_jobs(front) == [303]
        front.log.clear()
        front.add_faults("*", [503] * 100)
        with pytest.raises(TapError, match=re.escape(archive.tap_url)):
            archive.execute(adql(q))
        assert _created_jobs(front) == [503] * 4


def test_an_async_job_that_stalls_is_aborted(served):
    """A job still running at ``async_timeout`` is aborted and said so (pyvo's own wait has no
    overall deadline)."""
    slow = IrsaArchive(served["url"], data_root="x/", retries=3, backoff=0.01, async_timeout=0.5)
    heavy = "SELECT COUNT(*) AS n FROM " + ", ".join(f"spherex.plane AS t{i}" for i in range(9))
    with pytest.raises(TapError, match=r"still (QUEUED|EXECUTING) after 0.5 s .*aborted"):
        slow._run_async(heavy)


def test_without_an_archive_the_run_says_which_service_it_asks(served, sky_qr2, tmp_path, capsys):
    """Neither archive nor tap_url: the default TAP service (the spxdask.irsa.tap_url setting,
    IRSA's) is named before it is asked, so an offline run's retries are understood."""
    with dask.config.set({"spxdask.irsa.tap_url": served["url"]}):
        found = BatchPipeline(BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog,
                                          output_dir=tmp_path)).run_query()
    assert len(found) > 0
    assert f"query: no archive given: asking the TAP service at {served['url']}" in capsys.readouterr().out
