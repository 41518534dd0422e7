"""Input catalogs in every form astronomers have them, read per image (spxdask.targets)."""

from __future__ import annotations

import shutil
import subprocess

import lsdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from hats.io.paths import pixel_catalog_file
from hats.pixel_math import HealpixPixel

from spxdask import PhotometryConfig
from spxdask.batch import run_extraction
from spxdask.per_image import FINGERPRINT_KEY, footer, recorded
from spxdask.targets import CatalogError, formats, layout, load_catalog, open_targets
from spxdask.targets.table import MemoryTargets

from .test_pipeline import SPXDASK

BIG_ID = 2**62 + 12345  # a float would round it


def _truth(sky) -> pd.DataFrame:
    frame = pd.read_csv(sky.catalog)
    frame["targetid"] = frame["targetid"] + BIG_ID  # ids that only 64-bit integers hold exactly
    return frame


def _boxes(frame: pd.DataFrame) -> list[np.ndarray]:
    """A footprint around the whole catalog, and four quarters of it."""
    ra0, dec0 = frame.ra.mean(), frame.dec.mean()
    out = [np.array([[ra0 - 2, dec0 - 2], [ra0 + 2, dec0 - 2], [ra0 + 2, dec0 + 2], [ra0 - 2, dec0 + 2]])]
    for sx in (-1, 1):
        for sy in (-1, 1):
            lo, hi = sorted((ra0, ra0 + 0.5 * sx)), sorted((dec0, dec0 + 0.5 * sy))
            out.append(np.array([[lo[0], hi[0]], [lo[1], hi[0]], [lo[1], hi[1]], [lo[0], hi[1]]]))
    return out


def _write(kind: str, truth: pd.DataFrame, folder):
    """The truth catalog in one of the forms users bring, under the names their surveys use."""
    if kind == "csv (Gaia names)":
        path = folder / "gaia.csv"
        truth.rename(columns={"targetid": "source_id"}).to_csv(path, index=False)
    elif kind == "parquet file (objid, RA, DEC)":
        path = folder / "ls.parquet"
        truth.rename(columns={"targetid": "objid", "ra": "RA", "dec": "DEC"}).to_parquet(path)
    elif kind == "parquet folder (id, ra_deg, dec_deg)":
        path = folder / "parts"
        path.mkdir()
        renamed = truth.rename(columns={"targetid": "id", "ra": "ra_deg", "dec": "dec_deg"})
        for k, start in enumerate(range(0, len(renamed), 80)):
            renamed.iloc[start:start + 80].to_parquet(path / f"part-{k}.parquet")
    elif kind == "fits table":
        path = folder / "cat.fits"
        Table.from_pandas(truth.rename(columns=str.upper)).write(path)
    elif kind == "votable":
        path = folder / "cat.xml"
        Table.from_pandas(truth).write(path, format="votable")
    elif kind in ("hats catalog", "hats collection", "lsdb.Catalog"):
        catalog = lsdb.from_dataframe(truth, ra_column="ra", dec_column="dec", highest_order=10, partition_rows=40)
        if kind == "lsdb.Catalog":
            return catalog
        path = folder / "hats"
        catalog.write_catalog(path, as_collection=kind == "hats collection", progress_bar=False)
    return path


FORMS = ["csv (Gaia names)", "parquet file (objid, RA, DEC)", "parquet folder (id, ra_deg, dec_deg)", "fits table",
         "votable", "hats catalog", "hats collection", "lsdb.Catalog"]


@pytest.mark.parametrize("kind", FORMS)
def test_every_form_gives_the_rows_of_the_catalog(kind, sky_qr2, tmp_path):
    """Each form, its columns found by their usual names, gives per footprint the rows the
    plain in-memory selection of the same table gives, ids exact to the last digit."""
    truth = _truth(sky_qr2)
    targets = open_targets(_write(kind, truth, tmp_path), cache=tmp_path / "cache")
    assert len(targets) == len(truth) and str(targets.targetid_type) == "int64"
    plain = MemoryTargets(truth)
    whole, *quarters = _boxes(truth)
    rows = targets.in_footprint(whole)
    assert rows.targetid.tolist() == sorted(truth.targetid) and rows.targetid.dtype == np.int64
    expected = truth.set_index("targetid").loc[rows.targetid]
    np.testing.assert_array_equal(rows[["ra", "dec"]].to_numpy(), expected[["ra", "dec"]].to_numpy())
    counts = []
    for box in quarters:
        got, want = targets.in_footprint(box, margin_deg=0.01), plain.in_footprint(box, margin_deg=0.01)
        pd.testing.assert_frame_equal(got[["targetid", "ra", "dec"]], want[["targetid", "ra", "dec"]])
        counts.append(len(got))
    assert min(counts) > 10  # each quarter holds sources: the comparison is not of empty tables


def test_ids_text_and_explicit_columns(tmp_path):
    """Text ids stay text; an explicit column wins over the usual names; carried columns come
    along as numbers; a named column that is absent is an error naming it and the file."""
    path = tmp_path / "c.csv"
    path.write_text("targetid,my_id,ra,dec,pmra\n1,J100+2,10.0,5.0,1.5\n2,007,10.1,5.1,-2\n")
    default = open_targets(path, cache=tmp_path / "cache")
    chosen = open_targets(path, cache=tmp_path / "cache2", id_column="my_id")
    box = np.array([[9, 4], [11, 4], [11, 6], [9, 6]])
    assert default.in_footprint(box).targetid.tolist() == [1, 2]
    rows = chosen.in_footprint(box)
    assert rows.targetid.tolist() == ["007", "J100+2"] and str(chosen.targetid_type) == "string"
    assert rows.pmra.tolist() == [-2.0, 1.5]
    with pytest.raises(CatalogError, match=r"c\.csv: no column 'gaia_id' \(id_column\)"):
        open_targets(path, cache=tmp_path / "cache", id_column="gaia_id")
    assert load_catalog(path, id_column="my_id").targetid.tolist() == ["J100+2", "007"]


def test_bad_catalogs_are_named_with_their_rows(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(CatalogError, match=r"pic\.png: not a catalog format .* accepted: CSV, Parquet"):
        open_targets(tmp_path / "pic.png", cache=cache)
    pd.DataFrame({"targetid": [1, 2, 3], "ra": [10.0, 10.1, 10.2], "dec": [5.0, np.nan, 5.2]}).to_parquet(
        tmp_path / "nan.parquet")
    with pytest.raises(CatalogError, match=r"nan\.parquet: missing/NaN dec on row\(s\) 1"):
        open_targets(tmp_path / "nan.parquet", cache=cache)
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2)))]).writeto(tmp_path / "image.fits")
    with pytest.raises(CatalogError, match=r"image\.fits: a FITS file without a binary table"):
        open_targets(tmp_path / "image.fits", cache=cache)
    pd.DataFrame({"name": ["a"], "ra": [1.0], "dec": [2.0]}).to_parquet(tmp_path / "noid.parquet")
    with pytest.raises(CatalogError, match=r"noid\.parquet: missing column\(s\) \['targetid'\]; name it with id_column"):
        open_targets(tmp_path / "noid.parquet", cache=cache)
    assert not any(cache.glob("*/")) if cache.exists() else True  # nothing half-written is left


def test_a_large_file_is_laid_out_in_a_child_process_that_names_its_faults(tmp_path):
    """Over a million rows the layout runs in a child process (this process keeps none of its
    memory); a bad row deep in the file is still named with file and row, and nothing is left."""
    from spxdask.targets.open import CHILD_PROCESS_ROWS

    n = CHILD_PROCESS_ROWS + 100_000
    rng = np.random.default_rng(9)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    dec[n - 7] = np.nan
    pd.DataFrame({"targetid": np.arange(n), "ra": rng.uniform(0, 360, n), "dec": dec}).to_parquet(tmp_path / "deep.parquet")
    with pytest.raises(CatalogError, match=rf"deep\.parquet: missing/NaN dec on row\(s\) {n - 7}$"):
        open_targets(tmp_path / "deep.parquet", cache=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())
    dec[n - 7] = 0.0
    pd.DataFrame({"targetid": np.arange(n), "ra": rng.uniform(0, 360, n), "dec": dec}).to_parquet(tmp_path / "deep.parquet")
    targets = open_targets(tmp_path / "deep.parquet", cache=tmp_path / "cache")
    assert len(targets) == n and len(lsdb.open_catalog(targets.root).compute()) == n


def test_a_dense_file_is_laid_out_in_pieces_and_small_pixels(tmp_path, monkeypatch):
    """A file read a piece at a time lands, whole and once, in pixels none of which holds more
    than the limit (dense regions get finer pixels); LSDB opens the layout; a rerun reuses
    it until the file changes."""
    monkeypatch.setattr(formats, "PIECE_ROWS", 7_000)
    monkeypatch.setattr(layout, "ROWS_PER_PIXEL", 2_000)
    rng = np.random.default_rng(5)
    n = 60_000  # 3/4 of them within half a degree: one order-0 pixel would hold them all
    dense = rng.random(n) < 0.75
    ra = np.where(dense, rng.uniform(150, 150.5, n), rng.uniform(0, 360, n))
    dec = np.where(dense, rng.uniform(2, 2.5, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n))))
    truth = pd.DataFrame({"targetid": BIG_ID + rng.permutation(n), "ra": ra, "dec": dec})
    pq.write_table(pa.Table.from_pandas(truth), tmp_path / "dense.parquet", row_group_size=5_000)
    targets = open_targets(tmp_path / "dense.parquet", cache=tmp_path / "cache")
    sizes = [pq.read_metadata(f).num_rows for f in (tmp_path / "cache").rglob("Npix=*.parquet")]
    assert sum(sizes) == n and max(sizes) <= 2_000 and len(sizes) == len(targets.pixels)
    assert max(order for order, _ in targets.pixels) >= 5  # the dense region was split
    read = lsdb.open_catalog(targets.root).compute()
    assert sorted(read.targetid) == sorted(truth.targetid)
    box = np.array([[150.1, 2.1], [150.3, 2.1], [150.3, 2.3], [150.1, 2.3]])
    got = targets.in_footprint(box)
    pd.testing.assert_frame_equal(got[["targetid", "ra", "dec"]], MemoryTargets(truth).in_footprint(box))
    read_rows = sum(pq.read_metadata(str(pixel_catalog_file(targets.root, HealpixPixel(*p)))).num_rows
                    for p in targets.pixels_touched(box))
    # the circle around the box reads ~pi/2 of its area, plus the pixels' edges: not the dense region
    assert len(got) > 1000 and read_rows < 4 * len(got) and read_rows < n / 2
    again = open_targets(tmp_path / "dense.parquet", cache=tmp_path / "cache")
    assert again.root == targets.root
    truth.iloc[:-1].to_parquet(tmp_path / "dense.parquet")
    changed = open_targets(tmp_path / "dense.parquet", cache=tmp_path / "cache")
    assert changed.root != targets.root and len(changed) == n - 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [changed.root.rsplit("/", 1)[-1]]


def test_an_all_sky_file_is_laid_out_in_thousands_of_pixels(tmp_path, monkeypatch):
    """More pixels than a dataset writer opens by default (1,024): every row lands once."""
    monkeypatch.setattr(layout, "ROWS_PER_PIXEL", 50)
    rng = np.random.default_rng(6)
    n = 60_000  # order 4 (the rows counted as if all-sky): the northern sky's 1,536 pixels of ~40 rows
    truth = pd.DataFrame({"targetid": np.arange(n), "ra": rng.uniform(0, 360, n),
                          "dec": np.degrees(np.arcsin(rng.uniform(0, 1, n)))})
    truth.to_parquet(tmp_path / "sky.parquet")
    targets = open_targets(tmp_path / "sky.parquet", cache=tmp_path / "cache")
    assert len(targets.pixels) > 1100 and min(order for order, _ in targets.pixels) == 4
    read = pd.concat(pd.read_parquet(f) for f in (tmp_path / "cache").rglob("Npix=*.parquet"))
    assert sorted(read.targetid) == list(range(n))


def test_a_hats_catalog_read_per_image_measures_what_the_csv_does(sky_qr2, tmp_path):
    """The same catalog as a CSV, as HATS (read per image by each task) and in memory: every
    image measures the same rows (equal per-image fingerprints, which digest the rows) and
    writes the same table."""
    truth = pd.read_csv(sky_qr2.catalog)
    hats_root = _write("hats catalog", truth, tmp_path)
    out = {}
    for name, catalog in (("csv", sky_qr2.catalog), ("hats", hats_root), ("memory", truth)):
        out[name] = tmp_path / name / "per_image"
        assert run_extraction(sky_qr2.archive, catalog, PhotometryConfig(), out[name]) == len(sky_qr2.files)
    files = sorted(p.name for p in out["csv"].glob("*.parquet"))
    assert len(files) == len(sky_qr2.files)
    measured = 0
    for name in files:
        prints = {k: recorded(footer(out[k] / name), FINGERPRINT_KEY) for k in out}
        assert len(set(prints.values())) == 1, (name, prints)
        tables = [pd.read_parquet(out[k] / name) for k in out]
        for other in tables[1:]:
            pd.testing.assert_frame_equal(tables[0], other)
        measured += len(tables[0])
    assert measured > 100


def test_an_unreadable_catalog_stops_the_cli_in_one_line_before_any_query(tmp_path):
    (tmp_path / "cat.dat").write_bytes(bytes(range(256)) * 4)
    run = subprocess.run([SPXDASK, "batch", "--catalog", str(tmp_path / "cat.dat"), "--ra", "150", "--dec", "2",
                          "--radius", "0.5", "--tap", "http://127.0.0.1:9/tap", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"spxdask batch: error: {tmp_path / 'cat.dat'}: not a catalog format spxdask reads; accepted: {formats.ACCEPTED}"]
    assert not (tmp_path / "run" / "query.parquet").exists()
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_a_catalog_larger_than_a_worker_memory_runs(sky_qr2, tmp_path):
    """32 million rows (768 MB of ids and positions alone) against workers allowed 700 MiB
    each (a worker holds ~340 MiB before its first image): each task reads its pixels only,
    and measures exactly the rows the small catalog gives."""
    from distributed import Client, LocalCluster

    n = 32_000_000
    rng = np.random.default_rng(8)
    small = pd.read_csv(sky_qr2.catalog)
    path = tmp_path / "big.parquet"
    with pq.ParquetWriter(path, pa.schema([("targetid", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64())])) as w:
        w.write_table(pa.Table.from_pandas(small, preserve_index=False))
        for start in range(0, n, 2_000_000):  # all over the sky but the images' region
            dec = np.degrees(np.arcsin(rng.uniform(-1, np.sin(np.radians(-10)), 2_000_000)))
            w.write_table(pa.table({"targetid": np.arange(start, start + 2_000_000) + 10**12,
                                    "ra": rng.uniform(0, 360, 2_000_000), "dec": dec}))
    assert pq.read_metadata(path).num_rows * 24 > 700 * 2**20
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="700MiB", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        done = run_extraction(sky_qr2.archive, path, PhotometryConfig(), tmp_path / "big" / "per_image", client=client)
        peak = max(client.run(lambda: __import__("psutil").Process().memory_info().rss).values())
    assert done == len(sky_qr2.files) and peak < 700 * 2**20
    run_extraction(sky_qr2.archive, small, PhotometryConfig(), tmp_path / "small" / "per_image")
    for f in sorted((tmp_path / "small" / "per_image").glob("*.parquet")):
        big = tmp_path / "big" / "per_image" / f.name
        assert recorded(footer(big), FINGERPRINT_KEY) == recorded(footer(f), FINGERPRINT_KEY)


def test_a_remote_hats_catalog_is_read_per_footprint(sky_qr2, tmp_path):
    """A HATS catalog in an S3 bucket (the loopback S3 server, read through s3fs as users read
    the cloud copies of the surveys): the footprint's pixels are read where they are; a
    neighbour catalog needs no id."""
    from spxdask.testing.s3_server import S3Server

    truth = _truth(sky_qr2)
    (tmp_path / "bucket").mkdir()
    _write("hats catalog", truth, tmp_path / "bucket")
    box = _boxes(truth)[1]
    with S3Server(tmp_path / "bucket") as s3:
        for path in (tmp_path / "bucket").rglob("*"):
            if path.is_file() and path.suffix != ".fits":  # the server puts the FITS files only
                s3.put(path.relative_to(tmp_path / "bucket").as_posix(), path.read_bytes())
        targets = open_targets(f"{s3.url}/hats", cache=tmp_path / "cache", storage_options=s3.storage_options)
        got = targets.in_footprint(box)
        near = open_targets(f"{s3.url}/hats", cache=tmp_path / "cache", role="neighbours",
                            storage_options=s3.storage_options).in_footprint(box)
        reads = [r.path for r in s3.log if r.method == "GET" and "Npix=" in r.path]
    pd.testing.assert_frame_equal(got[["targetid", "ra", "dec"]], MemoryTargets(truth).in_footprint(box))
    assert list(near.columns) == ["ra", "dec"] and len(near) == len(got) > 10
    assert 0 < len(set(reads)) < len(targets.pixels)  # only the pixels the footprint touches
    assert not (tmp_path / "cache").exists()  # read where it is: nothing copied
