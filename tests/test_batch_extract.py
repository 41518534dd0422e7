"""Per-image Dask extraction: outputs, schema, resumability, failures, distributed runs."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from spxdask import PhotometryConfig, Source
from spxdask.batch import process_single_image, run_extraction
from spxdask.manifest import append_manifest, read_manifest, write_manifest
from spxdask.per_image import file_name as output_name


def _read_dir(path):
    frames = [pd.read_parquet(p) for p in sorted(path.glob("*.parquet"))]
    return pd.concat(frames, ignore_index=True).sort_values(["filename", "targetid"], ignore_index=True)


@pytest.fixture(scope="module")
def extracted(sky_qr2, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "per_image"
    catalog = pd.read_csv(sky_qr2.catalog)
    n = run_extraction(sky_qr2.archive, catalog, PhotometryConfig(), out, n_workers=2)
    return out, catalog, n


def test_one_file_per_image_with_the_schema(extracted, sky_qr2):
    out, catalog, n = extracted
    assert n == len(sky_qr2.files)
    files = sorted(out.glob("*.parquet"))
    assert len(files) == len(sky_qr2.files)
    schema = pq.read_schema(files[0])
    assert str(schema.field("targetid").type) == "int64"
    assert schema.field("flux").metadata[b"unit"] == b"uJy"
    assert b"spxdask.units" in schema.metadata
    for col in ("targetid", "ra", "dec", "obs_id", "band", "mjd", "x", "y", "flux", "flux_error", "mag_ab",
                "mag_ab_error", "wavelength", "bandwidth", "flag", "bg_level", "bg_error", "aperture_radius",
                "filename", "detector", "n_bad", "aperture_correction", "flux_total", "quality"):
        assert col in schema.names


def test_selection_on_the_client_finds_exactly_the_sources_in_each_image(extracted, sky_qr2):
    out, catalog, _ = extracted
    got = _read_dir(out)
    truth = pd.read_parquet(sky_qr2.truth_detections)
    key = ["filename", "targetid"]
    assert set(map(tuple, got[key].to_numpy())) == set(map(tuple, truth[key].to_numpy()))
    # 17-digit ids survive exactly
    assert set(got.targetid) <= set(catalog.targetid)
    assert got.targetid.dtype == np.int64


def test_manifest_records_are_added_beside_it_and_folded_by_the_next_run(sky_qr2, tmp_path):
    """A batch of records is a small file beside the manifest (the manifest is not rewritten);
    readers see the newest record of each image; records a killed run left are folded in by the
    next run, which adds a record per image it measures."""
    manifest = tmp_path / "manifest.parquet"
    write_manifest([{"image": "a.fits", "status": "ok"}, {"image": "b.fits", "status": "failed", "error": "x"}], manifest)
    before = manifest.read_bytes()
    append_manifest([{"image": "b.fits", "status": "ok"}, {"image": "c.fits", "status": "failed", "error": "y"}], manifest)
    assert manifest.read_bytes() == before and len(list(tmp_path.glob("manifest.parquet.parts/*.parquet"))) == 1
    assert dict(read_manifest(manifest, columns=["image", "status"]).to_numpy()) == {"a.fits": "ok", "b.fits": "ok",
                                                                             "c.fits": "failed"}
    run_extraction(sky_qr2.archive, pd.read_csv(sky_qr2.catalog), PhotometryConfig(), tmp_path / "per_image",
                   manifest_path=manifest)
    assert not (tmp_path / "manifest.parquet.parts").exists()
    folded = pd.read_parquet(manifest)
    assert folded.image.is_unique and len(folded) == 3 + len(sky_qr2.files)
    assert set(folded.loc[folded.image.isin(["a.fits", "b.fits"]), "status"]) == {"ok"}
    assert (folded.status == "ok").sum() == 2 + len(sky_qr2.files)


def test_rerun_resumes(extracted, sky_qr2):
    out, catalog, _ = extracted
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert run_extraction(sky_qr2.archive, catalog, PhotometryConfig(), out) == 0
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    victim = sorted(before)[3]
    victim.unlink()
    assert run_extraction(sky_qr2.archive, catalog, PhotometryConfig(), out) == 1
    assert victim.exists()
    manifest = pd.read_parquet(out.parent / "manifest.parquet")
    assert len(manifest) == len(sky_qr2.files) and (manifest.status == "ok").all()


def test_images_without_sources_still_get_a_file(sky_qr2, tmp_path):
    far = pd.DataFrame({"targetid": [1, 2], "ra": [10.0, 11.0], "dec": [-40.0, -41.0]})
    n = run_extraction(sky_qr2.archive, far, PhotometryConfig(), tmp_path / "per_image")
    assert n == len(sky_qr2.files)
    files = list((tmp_path / "per_image").glob("*.parquet"))
    assert len(files) == n and all(pq.read_metadata(f).num_rows == 0 for f in files)
    assert str(pq.read_schema(files[0]).field("targetid").type) == "int64"


def test_bad_images_are_recorded_and_the_rest_goes_on(sky_qr2, tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(sky_qr2.archive, archive)
    good = sorted(archive.rglob("*.fits"))
    data = good[0].read_bytes()
    good[0].write_bytes(data[: len(data) // 3])  # truncated
    fake = good[1].with_name("level2_2099W01_1A_0001_1D2_spx_l2b-v21-2099-001.fits")
    fake.write_text("<html>502 Bad Gateway</html>")
    catalog = pd.read_csv(sky_qr2.catalog)
    n = run_extraction(archive, catalog, PhotometryConfig(), tmp_path / "per_image")
    assert n == len(good) - 1
    manifest = pd.read_parquet(tmp_path / "manifest.parquet").set_index("image")
    assert manifest.loc[str(good[0]), "status"] == "failed"
    assert "truncated" in manifest.loc[str(good[0]), "error"]
    assert "not a readable FITS" in manifest.loc[str(fake), "error"]
    assert (manifest.status == "ok").sum() == len(good) - 1
    # a rerun retries the failures only, and they fail again the same way
    assert run_extraction(archive, catalog, PhotometryConfig(), tmp_path / "per_image") == 0
    assert (pd.read_parquet(tmp_path / "manifest.parquet").status == "failed").sum() == 2


def test_process_single_image_reference_semantics(sky_qr2, tmp_path):
    catalog = pd.read_csv(sky_qr2.catalog)
    sources = [Source(r.ra, r.dec, name=str(r.targetid)) for r in catalog.itertuples()]
    path = process_single_image(sky_qr2.files[0], sources, PhotometryConfig(), tmp_path)
    assert path is not None and path.name == output_name(*path.stem.rsplit("_D", 1))
    table = pd.read_parquet(path)
    assert pd.api.types.is_string_dtype(table.targetid)
    assert set(table.targetid) <= set(catalog.targetid.astype(str))
    assert process_single_image(sky_qr2.files[0], sources, PhotometryConfig(), tmp_path) is None


def test_hostile_obs_ids_stay_in_the_folder():
    assert "/" not in output_name("../../etc/passwd", 3)
    assert not output_name("../x", 1).startswith(".")


def test_distributed_run_equals_local_threads(extracted, sky_qr2, tmp_path):
    out, catalog, _ = extracted
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        n = run_extraction(sky_qr2.archive, catalog, PhotometryConfig(), tmp_path / "per_image")
        names = {k[0] if isinstance(k, tuple) else k for k in client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes))}
    assert n == len(sky_qr2.files)
    assert "photometry" in names
    # the targets went to the workers once (scattered, not through the graph), shared by the tasks
    assert "targets" in names
    pd.testing.assert_frame_equal(_read_dir(tmp_path / "per_image"), _read_dir(out))
