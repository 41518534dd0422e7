"""The run's HATS catalog: opened with LSDB (not with the project's reader) it holds every
measured source once with its per-image rows nested; cone searches and cross-matches work on
it; it grows with new images, rewriting only the partitions they touch, and a killed build
leaves the last catalog whole."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import hats.pixel_math.healpix_shim as hp
import lsdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog
from hats.pixel_math.partition_stats import generate_alignment

from spxdask import PhotometryConfig
from spxdask.batch import (
    BatchConfig,
    BatchPipeline,
    aggregate_lightcurves,
    read_lightcurve,
    read_lightcurves,
    read_spectrum,
    run_extraction,
)
from spxdask.batch.plot import plot_lightcurve, plot_spectrum
from spxdask.catalog import build_catalog
from spxdask.catalog.export import csv_name
from spxdask.catalog.plan import align, fine_pixels, plan
from spxdask.catalog.versions import MAIN, current_version, main_catalog, partition_files
from spxdask.per_image import write as write_per_image
from spxdask.photometry import COLUMNS
from spxdask.simulate import SimConfig, simulate_sky
from spxdask.spectra import SpectraConfig
from spxdask.spectra.compute import SOURCE_COLUMNS

from .kills import killed_worker, wait_for

KEYS = ["targetid", "mjd", "wavelength"]


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A sky of 16 images spread over 1.2 deg, measured: the per-image files."""
    root = tmp_path_factory.mktemp("catalog")
    sky = simulate_sky(root / "sky", SimConfig(n_images=16, size=256, n_sources=600, seed=5, radius=0.6,
                                               detectors=(1, 3, 5)))
    run_extraction(sky.archive, pd.read_csv(sky.catalog), PhotometryConfig(), root / "per_image")
    return root


def _rows(per_image_dir) -> pd.DataFrame:
    rows = pd.concat([pd.read_parquet(p) for p in sorted(per_image_dir.glob("*.parquet"))], ignore_index=True)
    return rows.sort_values(KEYS, kind="stable", ignore_index=True)


def _flat(catalog) -> pd.DataFrame:
    """Every nested light-curve row of an LSDB catalog, with its source's targetid, ra, dec."""
    frame = catalog.compute()
    rows = frame["lightcurve"].nest.to_flat()
    base = frame[["targetid", "ra", "dec"]].loc[rows.index]
    return pd.concat([base.reset_index(drop=True), rows.reset_index(drop=True)], axis=1)


def test_lsdb_opens_the_catalog_every_source_with_its_rows(field, tmp_path):
    made = build_catalog(field / "per_image", tmp_path / "catalog", spectra=SpectraConfig(), partition_rows=300)
    per_image = _rows(field / "per_image")
    catalog = lsdb.open_catalog(tmp_path / "catalog")
    assert made.partitions == len(catalog.get_healpix_pixels()) > 3 and made.rows == len(per_image)
    frame = catalog.compute()
    assert sorted(frame.targetid) == sorted(per_image.targetid.unique())
    assert catalog.hc_structure.catalog_info.total_rows == len(frame)
    flat = _flat(catalog).sort_values(KEYS, kind="stable", ignore_index=True)
    assert len(flat) == len(per_image)
    for col in ("obs_id", "mjd", "flux", "flux_psf", "flux_error", "quality", "release", "detector"):
        np.testing.assert_array_equal(flat[col].to_numpy(), per_image[col].to_numpy(), err_msg=col)
    # counts per source, and the spectrum column beside
    counts = frame.set_index("targetid").lightcurve.nest.to_flat().groupby(level=0).size()
    assert counts.to_dict() == per_image.groupby("targetid").size().to_dict()
    assert "spectrum" in frame.columns and frame.n_obs.sum() == len(per_image)
    # partitions hold at most the threshold unless a single fine pixel holds more
    sizes = [len(p.compute().lightcurve.nest.to_flat()) for p in catalog.partitions]
    assert max(sizes) <= max(300, max(fine_pixels(per_image.ra, per_image.dec)[1]))


@pytest.mark.parametrize("radius_arcmin", [3.0, 12.0])
def test_a_cone_search_finds_what_angular_distance_finds(field, tmp_path, radius_arcmin):
    build_catalog(field / "per_image", tmp_path / "catalog", partition_rows=300)
    sources = _rows(field / "per_image").drop_duplicates("targetid")
    ra0, dec0 = float(sources.ra.median()), float(sources.dec.median())
    found = lsdb.open_catalog(tmp_path / "catalog").cone_search(ra0, dec0, radius_arcmin * 60).compute()
    r0, d0, r, d = map(np.radians, (ra0, dec0, sources.ra.to_numpy(), sources.dec.to_numpy()))
    sep = np.degrees(2 * np.arcsin(np.sqrt(np.sin((d - d0) / 2) ** 2
                                           + np.cos(d) * np.cos(d0) * np.sin((r - r0) / 2) ** 2))) * 60
    assert set(found.targetid) == set(sources.targetid[sep < radius_arcmin]) and len(found) > 0


def test_a_crossmatch_with_another_hats_catalog_finds_every_source_itself(field, tmp_path):
    build_catalog(field / "per_image", tmp_path / "catalog", partition_rows=300)
    sources = _rows(field / "per_image").drop_duplicates("targetid")[["targetid", "ra", "dec"]]
    other = sources.rename(columns={"targetid": "other_id"}).reset_index(drop=True)
    lsdb.from_dataframe(other, catalog_name="other", ra_column="ra", dec_column="dec").write_catalog(tmp_path / "other")
    run = lsdb.open_catalog(tmp_path / "catalog", columns=["targetid", "ra", "dec"])
    matched = run.crossmatch(lsdb.open_catalog(tmp_path / "other"), radius_arcsec=1.0, n_neighbors=1,
                             suffix_method="overlapping_columns").compute()
    assert len(matched) == len(sources)
    assert (matched["targetid"].to_numpy() == matched["other_id"].to_numpy()).all()


def test_the_catalog_carries_a_margin_so_cross_matches_across_partitions_are_complete(field, tmp_path):
    """Each source's partner 8″ away, often across a partition edge: the run's catalog (a HATS
    collection with its margin cache) finds every pair, without LSDB's missing-margin warning;
    its catalog alone misses exactly the pairs that straddle an edge (counted independently)."""
    build_catalog(field / "per_image", tmp_path / "catalog", partition_rows=300)
    sources = _rows(field / "per_image").drop_duplicates("targetid")[["targetid", "ra", "dec"]].reset_index(drop=True)
    shifted = pd.DataFrame({"partner": sources.targetid, "ra": sources.ra + 8 / 3600 / np.cos(np.radians(sources.dec)),
                            "dec": sources.dec})
    lsdb.from_dataframe(shifted, catalog_name="partners").write_catalog(tmp_path / "partners")
    partners = lsdb.open_catalog(tmp_path / "partners")
    pixels = pd.read_csv(main_catalog(current_version(tmp_path / "catalog")) / "partition_info.csv")

    def partition(ra, dec):
        found = np.full(len(ra), -1)
        for k, (order, pix) in enumerate(zip(pixels.Norder, pixels.Npix)):
            found[hp.radec2pix(int(order), ra.to_numpy(), dec.to_numpy()) == pix] = k
        return found

    straddling = int((partition(sources.ra, sources.dec) != partition(shifted.ra, shifted.dec)).sum())
    assert straddling >= 3
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*margin.*")
        run = lsdb.open_catalog(tmp_path / "catalog", columns=["targetid", "ra", "dec"])
        assert run.margin is not None
        both = partners.crossmatch(run, radius_arcsec=9.0, n_neighbors=1, suffix_method="overlapping_columns").compute()
    assert len(both) == len(sources) and (both.partner.to_numpy() == both.targetid.to_numpy()).all()
    alone = lsdb.open_catalog(main_catalog(current_version(tmp_path / "catalog")), columns=["targetid", "ra", "dec"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        missed = partners.crossmatch(alone, radius_arcsec=9.0, n_neighbors=1, suffix_method="overlapping_columns").compute()
    assert len(missed) == len(sources) - straddling


def test_plan_equals_hats_alignment_and_grows_without_overlaps():
    rng = np.random.default_rng(3)
    ra = np.concatenate([rng.uniform(150, 152, 40_000), rng.normal(150.7, 0.05, 40_000)])
    dec = np.concatenate([rng.uniform(2, 3.5, 40_000), rng.normal(2.5, 0.05, 40_000)])
    for order in (5, 7):
        pixels, counts = fine_pixels(ra, dec, order)
        for threshold in (counts.max(), 3 * counts.max(), 50 * counts.max()):
            total = np.zeros(12 * 4**order, np.int64)
            total[pixels] = counts
            reference = generate_alignment(total, highest_order=order, threshold=int(threshold))
            assert [reference[p][0] for p in pixels] == align(pixels, counts, int(threshold), order).tolist()
    first = plan([fine_pixels(ra, dec)], 2000, [])
    more = fine_pixels(np.concatenate([ra, rng.uniform(151, 151.2, 30_000)]), np.concatenate([dec, rng.uniform(3, 3.2, 30_000)]))
    grown = plan([more], 2000, list(first))
    ranges = sorted(grown.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))  # disjoint
    covered = np.zeros(more[0].size, bool)
    for lo, hi in ranges:
        covered[np.searchsorted(more[0], lo):np.searchsorted(more[0], hi)] = True
    assert covered.all()
    assert set(first) - set(grown) and set(first) & set(grown)  # some split, some kept


def _split(field, tmp_path, fraction=0.7):
    """Per-image folders: the first ``fraction`` of the images by RA, and all."""
    files = sorted((field / "per_image").glob("*.parquet"), key=lambda p: pd.read_parquet(p, columns=["ra"]).ra.mean())
    first, every = tmp_path / "first", tmp_path / "every"
    for folder, chosen in ((first, files[: int(fraction * len(files))]), (every, files)):
        folder.mkdir()
        for f in chosen:
            shutil.copy2(f, folder / f.name)
    return first, every, files[int(fraction * len(files)):]


def _catalog_rows(path) -> pd.DataFrame:
    return _flat(lsdb.open_catalog(path)).sort_values(KEYS, kind="stable", ignore_index=True)


def _sources_and_spectra(path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary columns and the flat spectra of an LSDB catalog, sorted."""
    frame = lsdb.open_catalog(path).compute()
    spectra = frame["spectrum"].nest.to_flat()
    spectra.insert(0, "targetid", frame["targetid"].loc[spectra.index].to_numpy())
    return (frame[list(SOURCE_COLUMNS)].sort_values("targetid", ignore_index=True),
            spectra.sort_values(["targetid", "wavelength"], kind="stable", ignore_index=True))


def _files(catalog) -> dict:
    version = main_catalog(current_version(catalog))
    return {p.relative_to(version): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in (version / "dataset").rglob("Npix=*.parquet")}


def test_appending_images_rewrites_only_the_partitions_they_touch(field, tmp_path):
    first, every, new = _split(field, tmp_path)
    grown = tmp_path / "grown" / "catalog"
    build_catalog(first, grown, spectra=SpectraConfig(), partition_rows=300)
    before = _files(grown)
    for f in new:
        shutil.copy2(f, first / f.name)
    made = build_catalog(first, grown, spectra=SpectraConfig(), partition_rows=300)
    build_catalog(every, tmp_path / "full" / "catalog", spectra=SpectraConfig(), partition_rows=300)
    pd.testing.assert_frame_equal(_catalog_rows(grown), _catalog_rows(tmp_path / "full" / "catalog"))
    for appended, whole in zip(_sources_and_spectra(grown), _sources_and_spectra(tmp_path / "full" / "catalog")):
        pd.testing.assert_frame_equal(appended, whole)
    after = _files(grown)
    untouched = [k for k in before if k in after and before[k] == after[k]]
    assert 0 < made.rewritten < made.partitions and len(untouched) == made.partitions - made.rewritten
    # nothing new: nothing rewritten, the same version
    version = current_version(grown)
    assert build_catalog(first, grown, spectra=SpectraConfig(), partition_rows=300).rewritten == 0
    assert current_version(grown) == version


def test_an_append_with_other_spectra_settings_recomputes_every_spectrum(field, tmp_path):
    """New spectra settings reach every partition, the grown ones too: equal to a full build with them."""
    first, every, new = _split(field, tmp_path)
    grown = tmp_path / "grown" / "catalog"
    build_catalog(first, grown, spectra=SpectraConfig(), partition_rows=300)
    for f in new:
        shutil.copy2(f, first / f.name)
    other = SpectraConfig(knot_spacing=0.3, false_positive_rate=0.2)
    made = build_catalog(first, grown, spectra=other, partition_rows=300)
    build_catalog(every, tmp_path / "full" / "catalog", spectra=other, partition_rows=300)
    assert made.rewritten == made.partitions
    for appended, whole in zip(_sources_and_spectra(grown), _sources_and_spectra(tmp_path / "full" / "catalog")):
        pd.testing.assert_frame_equal(appended, whole)


def test_a_killed_worker_during_an_append_changes_nothing(field, tmp_path):
    first, every, new = _split(field, tmp_path)
    build_catalog(first, tmp_path / "catalog", partition_rows=300)
    for f in new:
        shutil.copy2(f, first / f.name)
    # killed while it splits files or writes partitions: after every histogram and a split
    with killed_worker("catalog-", after=len(new) + 1) as (client, kill, progress):
        made = build_catalog(first, tmp_path / "catalog", partition_rows=300, client=client)
    assert kill.landed(progress) and made.rewritten > 1, kill
    build_catalog(every, tmp_path / "full", partition_rows=300)
    pd.testing.assert_frame_equal(_catalog_rows(tmp_path / "catalog"), _catalog_rows(tmp_path / "full"))


def _written(versions: Path, old: Path) -> bool:
    """A partition file of a new version that is not a link to the old version's."""
    return any(f.stat().st_nlink == 1 for v in versions.glob("v-*") if v.name != old.name and v.is_dir()
               and not v.name.endswith(".shards") for f in v.glob(f"{MAIN}/dataset/*/*/*.parquet"))


#: where the kill lands in the append: a condition on the versions folder
APPEND_STAGES = {"while the new images are split": lambda versions, old: any(versions.glob("*.shards/*/*")),
                 "while the new version's partitions are written": _written}


@pytest.mark.parametrize("stage", APPEND_STAGES)
def test_a_run_killed_during_an_append_leaves_the_last_catalog_whole(field, tmp_path, stage):
    first, every, new = _split(field, tmp_path)
    catalog = tmp_path / "catalog"
    build_catalog(first, catalog, partition_rows=300)
    old, version = _catalog_rows(catalog), current_version(catalog)
    for f in new:
        shutil.copy2(f, first / f.name)
    script = (f"from spxdask.catalog import build_catalog; build_catalog({str(first)!r}, {str(catalog)!r}, "
              f"partition_rows=300)")
    proc = subprocess.Popen([sys.executable, "-c", script])
    versions = tmp_path / ".catalog-versions"
    assert wait_for(lambda: APPEND_STAGES[stage](versions, version) or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build had ended before the kill"
    assert current_version(catalog) == version  # not swapped: the last catalog, whole
    pd.testing.assert_frame_equal(_catalog_rows(catalog), old)
    assert len(list(versions.iterdir())) > 1  # the killed build's leftovers
    build_catalog(first, catalog, partition_rows=300)
    build_catalog(every, tmp_path / "full", partition_rows=300)
    pd.testing.assert_frame_equal(_catalog_rows(catalog), _catalog_rows(tmp_path / "full"))
    assert len(list(versions.iterdir())) == 1  # the killed build's leftovers are gone


def test_a_rerun_of_the_pipeline_measures_only_new_images(tmp_path):
    sky = simulate_sky(tmp_path / "sky", SimConfig(n_images=8, size=256, n_sources=300, seed=9, radius=0.5,
                                                   detectors=(2,)))
    archive = tmp_path / "archive"
    files = sorted(sky.archive.rglob("*.fits"))
    def add(chosen):
        for f in chosen:
            (archive / f.relative_to(sky.archive)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, archive / f.relative_to(sky.archive))

    add(files[:6])
    config = BatchConfig(center_ra=150.1, center_dec=2.2, radius=0.7, catalog_path=sky.catalog, archive=str(archive),
                         output_dir=tmp_path / "run", partition_rows=200)
    first = BatchPipeline(config).run_all()
    add(files[6:])
    second = BatchPipeline(config).run_all()
    assert first.measured == 6 and second.measured == len(files) - 6 and second.images == len(files)
    assert 0 < second.partitions_rewritten <= second.partitions
    assert f"{'rewritten':<18}{second.partitions_rewritten:>10}" in second.table()
    rows = _rows(config.per_image_dir)
    assert len(_catalog_rows(config.catalog_dir)) == len(rows) == second.rows
    assert pd.read_parquet(config.sources_path).targetid.tolist() == sorted(rows.targetid.unique())
    tid = rows.targetid.value_counts().index[0]
    assert len(read_spectrum(config.output_dir, tid)) > 0


def test_read_one_source_returns_exactly_its_rows(field, tmp_path):
    build_catalog(field / "per_image", tmp_path / "catalog", spectra=SpectraConfig(), partition_rows=300)
    per_image = _rows(field / "per_image")
    for tid in per_image.targetid.drop_duplicates().sample(5, random_state=1):
        got = read_lightcurve(tmp_path, tid)
        want = per_image[per_image.targetid == tid].reset_index(drop=True)
        pd.testing.assert_frame_equal(got[list(want.columns)], want, check_dtype=False)
    two = per_image.targetid.unique()[:2]
    assert set(read_lightcurves(tmp_path, list(two)).targetid) == set(two)
    assert read_lightcurve(tmp_path, 12345).empty and list(read_lightcurve(tmp_path, 12345).columns) == list(COLUMNS)
    assert len(read_lightcurve(tmp_path, str(two[0]))) == (per_image.targetid == two[0]).sum()
    units = read_lightcurve(tmp_path, two[0]).attrs["units"]
    assert units["flux_psf"] == units["flux_total"] == "uJy" and units["mjd"] == "d" and units["wavelength"] == "um"


def test_readers_take_the_folder_the_writer_wrote(field, tmp_path):
    """``aggregate_lightcurves(image_dir, lightcurve_dir)`` then ``read_lightcurve(lightcurve_dir,
    tid)``, as ``lsdb.open_catalog`` takes the catalog folder; a run folder (its ``catalog/``) too."""
    lightcurve_dir = tmp_path / "my_lightcurves"
    n = aggregate_lightcurves(field / "per_image", lightcurve_dir, spectra=SpectraConfig())
    per_image = _rows(field / "per_image")
    assert n == per_image.targetid.nunique() == len(lsdb.open_catalog(lightcurve_dir).compute())
    build_catalog(field / "per_image", tmp_path / "run" / "catalog", spectra=SpectraConfig())
    for tid in per_image.targetid.drop_duplicates().sample(3, random_state=2):
        want = per_image[per_image.targetid == tid].reset_index(drop=True)
        for folder in (lightcurve_dir, tmp_path / "run"):
            got = read_lightcurve(folder, tid)
            pd.testing.assert_frame_equal(got[list(want.columns)], want, check_dtype=False)
        spectrum = read_spectrum(lightcurve_dir, tid)
        assert len(spectrum) > 0
        pd.testing.assert_frame_equal(spectrum, read_spectrum(tmp_path / "run", tid))
    with pytest.raises(FileNotFoundError, match="no catalog in"):
        read_lightcurve(tmp_path / "nothing", 1)


def test_csv_export_and_plots(field, tmp_path):
    aggregate_lightcurves(field / "per_image", tmp_path / "catalog", csv_dir=tmp_path / "csv")
    stray = tmp_path / "csv" / "999.csv"
    stray.write_text("stale")
    aggregate_lightcurves(field / "per_image", tmp_path / "catalog", csv_dir=tmp_path / "csv", clean=True)
    assert not stray.exists()
    per_image = _rows(field / "per_image")
    csvs = list((tmp_path / "csv").glob("*.csv"))
    assert len(csvs) == per_image.targetid.nunique()
    one = pd.read_csv(csvs[0], dtype={"targetid": "int64"})
    assert csvs[0].name == csv_name(one.targetid.iloc[0])
    assert list(one.columns)[:4] == ["targetid", "obs_id", "band", "mjd"]
    assert list(one.columns)[-9:] == ["flux_model", "flux_model_error", "model", "flux_psf", "flux_psf_error",
                                      "flux_total", "flux_total_error", "quality",
                                      "psf_quality"]  # the fluxes to trust travel with the reference's
    rows = read_lightcurve(tmp_path, per_image.targetid.value_counts().index[0])
    for fn in (plot_lightcurve, plot_spectrum):
        path = fn(rows, tmp_path / f"{fn.__name__}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _synthetic(root, ids, tid_type):
    rng = np.random.default_rng(0)
    for k in range(4):
        n = len(ids)
        df = pd.DataFrame({c: rng.normal(size=n) for c in COLUMNS})
        df = df.assign(targetid=ids, obs_id=f"2026W01_1A_{k:04d}_1", band="D1", filename=f"f{k}.fits",
                       quality="", psf_quality="", model="PSF", pipeline_version="6.5.7", release="qr2",
                       flag=np.int32(0), detector=np.int8(1), n_bad=np.int16(0), ra=150 + 0.01 * np.arange(n),
                       dec=2.0, psf_n_neighbours=np.int32(0), mjd=61000.0 + k)
        write_per_image(df[list(COLUMNS)], root / f"img{k}_D1.parquet", tid_type)


def test_17_digit_ids_that_float_cannot_separate(tmp_path):
    ids = [39627000000000000 + d for d in range(10)]
    assert len({float(i) for i in ids}) < len(ids)
    _synthetic(tmp_path / "per_image", ids, pa.int64())
    assert aggregate_lightcurves(tmp_path / "per_image", tmp_path / "catalog", csv_dir=tmp_path / "csv") == 10
    assert lsdb.open_catalog(tmp_path / "catalog").compute().targetid.dtype.name.startswith("int64")
    for tid in ids:
        assert len(read_lightcurve(tmp_path, tid)) == 4
        csv = pd.read_csv(tmp_path / "csv" / f"{tid}.csv", dtype={"targetid": "int64"})
        assert (csv.targetid == tid).all() and len(csv) == 4


def test_string_ids(tmp_path):
    ids = ["J1200+0100", "J1200-0100", "gal/../7"]
    _synthetic(tmp_path / "per_image", ids, pa.string())
    assert aggregate_lightcurves(tmp_path / "per_image", tmp_path / "catalog", csv_dir=tmp_path / "csv") == 3
    assert len(read_lightcurve(tmp_path, "J1200-0100")) == 4
    names = sorted(p.name for p in (tmp_path / "csv").iterdir())
    assert names == sorted(csv_name(i) for i in ids) and all("/" not in n for n in names)


def test_the_catalog_is_valid_hats(field, tmp_path):
    build_catalog(field / "per_image", tmp_path / "catalog", spectra=SpectraConfig(), partition_rows=300)
    assert is_valid_catalog(tmp_path / "catalog", strict=True)
    # names, codes and flags are dictionary-coded; the measurements are not (the writer's attempt costs time)
    group = pq.ParquetFile(partition_files(current_version(tmp_path / "catalog"))[0]).metadata.row_group(0)
    coded = {group.column(i).path_in_schema: "RLE_DICTIONARY" in group.column(i).encodings
             for i in range(group.num_columns)}
    assert coded["lightcurve.obs_id.list.element"] and coded["lightcurve.flag.list.element"]
    assert coded["spectrum.channel.list.element"] and not coded["lightcurve.flux.list.element"]
    assert not coded["targetid"] and not coded["ra"]


def test_no_rows_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no per-image Parquet files"):
        build_catalog(tmp_path / "nothing", tmp_path / "catalog")
    write_per_image(pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS}).assign(
        targetid=pd.Series(dtype="int64"), obs_id=pd.Series(dtype="str")), tmp_path / "per_image" / "img_D1.parquet",
        pa.int64())
    with pytest.raises(ValueError, match="no photometry rows in .*per_image"):
        build_catalog(tmp_path / "per_image", tmp_path / "catalog")
    assert not (tmp_path / "catalog").exists()
