"""Reading the archive from an S3 server on loopback laid out like the public bucket, through
s3fs with anonymous access: index, query, read in place, fetch, and TAP + S3 data root."""

from __future__ import annotations

import hashlib

import dask
import numpy as np
import pandas as pd
import pytest

from spxdask.archive import FetchConfig, LocalArchive, RegionQuery, fetch
from spxdask.archive.fetch import md5_of
from spxdask.batch import BatchConfig, BatchPipeline
from spxdask.spherex import L2File
from spxdask.testing import tap
from spxdask.testing.s3_server import S3Server

from .conftest import lightcurve_rows


@pytest.fixture(scope="module")
def s3(sky_qr2):
    with S3Server(sky_qr2.archive) as server:
        yield server


def test_index_and_query_over_s3(s3, sky_qr2, tmp_path):
    remote = LocalArchive(s3.url, index_path=tmp_path / "index.parquet", storage_options=s3.storage_options)
    table = remote.index(scheduler="sync")
    assert len(table) == len(sky_qr2.files) and table["error"].isna().all()
    local = LocalArchive(sky_qr2.archive, index_path=tmp_path / "local.parquet")
    q = RegionQuery(circle=(150.12, 2.23, 0.1))
    a, b = remote.query(q).frame, local.query(q).frame
    assert list(zip(a.obs_id, a.detector)) == list(zip(b.obs_id, b.detector))
    assert a.url.str.startswith("s3://nasa-irsa-spherex/qr2/level2/").all()


def test_l2_file_over_s3_reads_sections(s3, sky_qr2):
    rel = sky_qr2.files[0].relative_to(sky_qr2.archive).as_posix()
    with L2File(f"{s3.url}/{rel}", storage_options=s3.storage_options) as remote, L2File(sky_qr2.files[0]) as local:
        assert remote.meta == local.meta
        sec = (slice(10, 50), slice(100, 140))
        np.testing.assert_array_equal(remote.image(section=sec), local.image(section=sec))
        np.testing.assert_allclose(remote.footprint(), local.footprint())


def test_fetch_from_s3(s3, sky_qr2, tmp_path):
    remote = LocalArchive(s3.url, index_path=tmp_path / "index.parquet", storage_options=s3.storage_options)
    found = remote.query(RegionQuery(circle=(150.1, 2.2, 1.0)))
    result = fetch(found.to_bag(), tmp_path / "images", FetchConfig(retries=1), storage_options=s3.storage_options)
    assert (result.status == "ok").all() and len(result) == len(sky_qr2.files)
    by_name = {p.name: p for p in sky_qr2.files}
    for path in result.path:
        name = path.rsplit("/", 1)[1]
        assert hashlib.md5(open(path, "rb").read()).hexdigest() == hashlib.md5(by_name[name].read_bytes()).hexdigest()


def test_drizzle_from_s3_and_http_equals_the_local_cube(s3, sky_qr2, tmp_path):
    """A cube drizzled from the archive over S3 (fsspec options) and over HTTP equals the cube
    of the local archive."""
    from spxdask.drizzle3d import Drizzle3DConfig, drizzle, load_cube
    from spxdask.testing.http_server import FileServer

    box = dict(center_ra=150.1, center_dec=2.2, width=10, height=10, detector=2)
    local = load_cube(drizzle(Drizzle3DConfig(**box, archive=str(sky_qr2.archive), output_dir=tmp_path / "local"))[2])
    via_s3 = drizzle(Drizzle3DConfig(**box, archive=s3.url, storage_options=s3.storage_options,
                                     output_dir=tmp_path / "s3"))
    with FileServer(sky_qr2.archive) as server:
        via_http = drizzle(Drizzle3DConfig(**box, archive=server.url, output_dir=tmp_path / "http"))
    for result in (via_s3, via_http):
        cube = load_cube(result[2])
        assert cube["header"]["N_INPUTS"] == local["header"]["N_INPUTS"] > 0
        np.testing.assert_array_equal(cube["count"], local["count"])
        np.testing.assert_allclose(cube["sci"], local["sci"], rtol=1e-6, equal_nan=True)
    # the remote roots were indexed beside the outputs, never written to
    assert (tmp_path / "s3" / "archive_index.parquet").exists()


def test_tap_plus_s3_read_in_place_equals_local(s3, sky_qr2, tmp_path):
    local_archive = LocalArchive(sky_qr2.archive, index_path=tmp_path / "local.parquet")
    url = tap.publish(*tap.rows_from_archive(local_archive))
    with dask.config.set({"spxdask.irsa.data_root": s3.url + "/"}):
        cfg = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog, tap_url=url,
                          read_in_place=True, storage_options=s3.storage_options, output_dir=tmp_path / "s3")
        summary = BatchPipeline(cfg).run_all()
    assert summary.failed == 0 and not (tmp_path / "s3" / "images").exists()
    BatchPipeline(BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog,
                              archive=str(sky_qr2.archive), output_dir=tmp_path / "local")).run_all()
    a = lightcurve_rows(tmp_path / "s3")
    b = lightcurve_rows(tmp_path / "local")
    pd.testing.assert_frame_equal(a, b)


# -- faults ---------------------------------------------------------------------------------------
def _first_key(s3, sky):
    return sky.files[0].relative_to(sky.archive).as_posix()


@pytest.mark.parametrize("faults", [[503, 503], [500], ["reset"], ["truncate"], ["short"], ["slow"]])
def test_fetch_from_s3_survives_transient_faults(s3, sky_qr2, tmp_path, faults):
    """S3 throttling (503 SlowDown), internal errors, resets, truncated bodies and stalls: the
    fetch retries and every file ends byte-identical."""
    remote = LocalArchive(s3.url, index_path=tmp_path / "index.parquet", storage_options=s3.storage_options)
    found = remote.query(RegionQuery(circle=(150.1, 2.2, 1.0)))
    key = _first_key(s3, sky_qr2)
    s3.slow_seconds = 3.0
    s3.add_faults(key, faults)
    cfg = FetchConfig(retries=3, backoff=0.1, timeout=1.0)
    result = fetch(found.to_bag(), tmp_path / "images", cfg, storage_options=s3.storage_options)
    assert (result.status == "ok").all(), result[["status", "error"]]
    assert not s3._faults.get(key), "the faults were not met"
    by_name = {p.name: p for p in sky_qr2.files}
    for path in result.path:
        assert md5_of(path) == md5_of(by_name[path.rsplit("/", 1)[1]])


def test_s3_that_never_recovers_ends_within_the_budget(s3, sky_qr2, tmp_path):
    remote = LocalArchive(s3.url, index_path=tmp_path / "index.parquet", storage_options=s3.storage_options)
    found = remote.query(RegionQuery(circle=(150.1, 2.2, 1.0)))
    key = _first_key(s3, sky_qr2)
    s3.add_faults(key, [503] * 10_000)
    before = len(s3.log)
    try:
        result = fetch(found.to_bag(), tmp_path / "images", FetchConfig(retries=100, backoff=0.2, max_backoff=0.4,
                                                                       budget=3.0), storage_options=s3.storage_options)
    finally:
        s3._faults.clear()
    failed = result[result.status == "failed"]
    assert len(failed) == 1 and failed.url.iloc[0].endswith(key)
    assert "SlowDown" in failed.error.iloc[0] or failed.error.iloc[0] == "no answer (time budget of 3 s spent)"
    assert (result.status == "ok").sum() == len(result) - 1
    # the object's requests as the server saw them (botocore's retries and the fetch's): none
    # after the budget of 3 s from the first (0.5 s for the answer to start on a loaded machine)
    times = [r.at for r in s3.log[before:] if r.method == "GET" and r.path.endswith(key)]
    assert len(times) >= 2 and max(times) - min(times) < 3.0 + 0.5, times


def test_faults_while_reading_in_place_from_s3(s3, sky_qr2, tmp_path):
    """Photometry reading S3 objects in place (ranged reads) through throttling and resets
    equals the run on the local archive; nothing failed."""
    common = dict(center_ra=150.1, center_dec=2.2, radius=0.3, catalog_path=sky_qr2.catalog)
    BatchPipeline(BatchConfig(**common, archive=str(sky_qr2.archive), output_dir=tmp_path / "local")).run_all()
    pipeline = BatchPipeline(BatchConfig(**common, archive=s3.url, read_in_place=True,
                                         storage_options=s3.storage_options, output_dir=tmp_path / "s3"))
    pipeline.run_query()  # the index is read first: the faults meet the photometry's reads
    s3.add_faults("*", [503, "reset", 503, "truncate", 500] * 3)
    try:
        summary = pipeline.run_all()
        assert not s3._faults.get("*"), "the faults were not met"
    finally:
        s3._faults.clear()
    assert summary.failed == 0 and summary.measured > 0
    pd.testing.assert_frame_equal(lightcurve_rows(tmp_path / "s3"), lightcurve_rows(tmp_path / "local"))


def test_a_truncated_object_is_named_not_fatal(sky_qr2, tmp_path):
    """An object cut short in the bucket: the index and the batch run name it (unreadable,
    truncated); the others are measured. Repaired, it is read again and measured alone."""
    with S3Server(sky_qr2.archive) as server:
        key = _first_key(server, sky_qr2)
        data = sky_qr2.files[0].read_bytes()
        server.put(key, data[: len(data) // 2])
        config = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.5, catalog_path=sky_qr2.catalog,
                             archive=server.url, read_in_place=True, storage_options=server.storage_options,
                             output_dir=tmp_path / "run")
        summary = BatchPipeline(config).run_all()
        manifest = pd.read_parquet(config.manifest_path)
        server.put(key, data)  # repaired in the bucket: the next run reads it again and measures it alone
        repaired = BatchPipeline(config).run_all()
    assert summary.unreadable == 1 and summary.failed == 0 and summary.images == len(sky_qr2.files) - 1
    row = manifest[manifest.status == "unreadable"].iloc[0]
    assert row.image.endswith(key) and "truncated" in row.error
    assert repaired.unreadable == 0 and repaired.images == len(sky_qr2.files) and repaired.measured == 1
