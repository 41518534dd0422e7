"""The light-curve store: a shuffle on targetid that loses nothing and reads fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client, LocalCluster

from spxdask import PhotometryConfig
from spxdask.batch import aggregate_lightcurves, read_lightcurve, read_lightcurves, run_extraction
from spxdask.batch.aggregate import csv_name
from spxdask.batch.extract import _write
from spxdask.batch.plot import plot_lightcurve, plot_spectrum
from spxdask.photometry import COLUMNS
from spxdask.store import INDEX_NAME


@pytest.fixture(scope="module")
def batch_dir(sky_qr2, tmp_path_factory):
    root = tmp_path_factory.mktemp("lc")
    run_extraction(sky_qr2.archive, pd.read_csv(sky_qr2.catalog), PhotometryConfig(), root / "per_image")
    return root


def _per_image_rows(root):
    return pd.concat([pd.read_parquet(p) for p in (root / "per_image").glob("*.parquet")], ignore_index=True)


def _check_same_rows(per_image, store):
    assert len(store) == len(per_image)
    pd.testing.assert_series_equal(per_image.groupby("targetid").size(), store.groupby("targetid").size())
    for col in ("flux", "mjd", "wavelength", "flux_error"):
        a = per_image.groupby("targetid")[col].sum()
        b = store.groupby("targetid")[col].sum()
        np.testing.assert_allclose(a.to_numpy(), b.reindex(a.index).to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("npartitions", [None, 3])
def test_store_has_every_row_once_and_sorted(batch_dir, npartitions):
    n = aggregate_lightcurves(batch_dir / "per_image", batch_dir / "lightcurves", npartitions=npartitions)
    per_image = _per_image_rows(batch_dir)
    assert n == per_image.targetid.nunique()
    files = sorted((batch_dir / "lightcurves").glob("part.*.parquet"), key=lambda p: int(p.stem.split(".")[1]))
    assert len(files) == (npartitions or 1)
    store = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    _check_same_rows(per_image, store)
    keys = list(zip(store.targetid, store.mjd, store.wavelength))
    assert keys == sorted(keys)
    assert store.targetid.dtype == np.int64
    index = pd.read_parquet(batch_dir / "lightcurves" / INDEX_NAME)
    assert index.num_rows.sum() == len(store)
    assert (index.targetid_min.to_numpy()[1:] > index.targetid_max.to_numpy()[:-1]).all()


def test_read_one_source_returns_exactly_its_rows(batch_dir):
    aggregate_lightcurves(batch_dir / "per_image", batch_dir / "lightcurves", npartitions=3)
    per_image = _per_image_rows(batch_dir)
    for tid in per_image.targetid.drop_duplicates().sample(5, random_state=1):
        got = read_lightcurve(batch_dir, tid)
        want = per_image[per_image.targetid == tid].sort_values(["mjd", "wavelength"], ignore_index=True)
        pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
    two = per_image.targetid.unique()[:2]
    assert set(read_lightcurves(batch_dir, list(two)).targetid) == set(two)
    assert read_lightcurve(batch_dir, 12345).empty
    assert len(read_lightcurve(batch_dir, str(two[0]))) == (per_image.targetid == two[0]).sum()


def test_rerun_replaces_the_store_and_clean_clears_csvs(batch_dir):
    out = batch_dir / "lightcurves"
    aggregate_lightcurves(batch_dir / "per_image", out, csv_dir=batch_dir / "csv")
    stray = batch_dir / "csv" / "999.csv"
    stray.write_text("stale")
    aggregate_lightcurves(batch_dir / "per_image", out, npartitions=2, csv_dir=batch_dir / "csv", clean=True)
    assert not stray.exists()
    assert len(list(out.glob("part.*.parquet"))) == 2
    assert not [p for p in batch_dir.iterdir() if p.name.startswith(".lightcurves")]
    per_image = _per_image_rows(batch_dir)
    csvs = list((batch_dir / "csv").glob("*.csv"))
    assert len(csvs) == per_image.targetid.nunique()
    one = pd.read_csv(csvs[0], dtype={"targetid": "int64"})
    assert csvs[0].name == csv_name(one.targetid.iloc[0])
    assert list(one.columns)[:4] == ["targetid", "obs_id", "band", "mjd"]


def _synthetic(root, ids, tid_type):
    rng = np.random.default_rng(0)
    for k in range(4):
        n = len(ids)
        df = pd.DataFrame({c: rng.normal(size=n) for c in COLUMNS})
        df = df.assign(targetid=ids, obs_id=f"2026W01_1A_{k:04d}_1", band="D1", filename=f"f{k}.fits",
                       quality="", psf_quality="", pipeline_version="6.5.7", release="qr2",
                       flag=np.int32(0), detector=np.int8(1), n_bad=np.int16(0),
                       psf_n_neighbours=np.int32(0), mjd=61000.0 + k)
        _write(df[list(COLUMNS)], root / f"img{k}_D1.parquet", tid_type)


def test_17_digit_ids_that_float_cannot_separate(tmp_path):
    ids = [39627000000000000 + d for d in range(10)]
    assert len({float(i) for i in ids}) < len(ids)
    _synthetic(tmp_path / "per_image", ids, pa.int64())
    n = aggregate_lightcurves(tmp_path / "per_image", tmp_path / "lightcurves", csv_dir=tmp_path / "csv")
    assert n == 10
    for tid in ids:
        assert len(read_lightcurve(tmp_path, tid)) == 4
        csv = pd.read_csv(tmp_path / "csv" / f"{tid}.csv", dtype={"targetid": "int64"})
        assert (csv.targetid == tid).all() and len(csv) == 4


def test_string_ids(tmp_path):
    ids = ["J1200+0100", "J1200-0100", "gal/../7"]
    _synthetic(tmp_path / "per_image", ids, pa.string())
    assert aggregate_lightcurves(tmp_path / "per_image", tmp_path / "lightcurves", csv_dir=tmp_path / "csv") == 3
    assert len(read_lightcurve(tmp_path, "J1200-0100")) == 4
    names = sorted(p.name for p in (tmp_path / "csv").iterdir())
    assert names == sorted(csv_name(i) for i in ids) and all("/" not in n for n in names)


def test_distributed_p2p_equals_local(batch_dir, tmp_path):
    aggregate_lightcurves(batch_dir / "per_image", batch_dir / "lightcurves", npartitions=3)
    local = pd.concat([pd.read_parquet(f) for f in sorted((batch_dir / "lightcurves").glob("part.*"))])
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
        aggregate_lightcurves(batch_dir / "per_image", tmp_path / "lightcurves", npartitions=3)
    dist = pd.concat([pd.read_parquet(f) for f in sorted((tmp_path / "lightcurves").glob("part.*"))])
    pd.testing.assert_frame_equal(local.reset_index(drop=True), dist.reset_index(drop=True))


def test_plots(batch_dir, tmp_path):
    aggregate_lightcurves(batch_dir / "per_image", batch_dir / "lightcurves")
    tid = _per_image_rows(batch_dir).targetid.value_counts().index[0]
    rows = read_lightcurve(batch_dir, tid)
    for fn in (plot_lightcurve, plot_spectrum):
        path = fn(rows, tmp_path / f"{fn.__name__}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
