"""The orchestration layer: the client a user passes, resumes that know what made their
outputs, the reference's ignored knobs, one config base, and no global state touched."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from spxdask import PhotometryConfig, Source
from spxdask.archive.fetch import FetchConfig
from spxdask.archive.query import RegionQuery
from spxdask.batch import BatchConfig, BatchPipeline, SpectraConfig, aggregate_lightcurves, run_extraction
from spxdask.catalog.versions import HISTOGRAMS, PARTITIONS, current_version
from spxdask.compat import KNOBS, ReferenceKnobWarning
from spxdask.drizzle3d import Drizzle3DConfig, drizzle
from spxdask.per_image import file_name, recorded_fingerprint
from spxdask.simulate import SimConfig
from spxdask.spherex import L2File

from .conftest import lightcurve_rows

REGION = dict(center_ra=150.1, center_dec=2.2, radius=0.3)


def _prefixes(client) -> set[str]:
    names = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    return {n[0] if isinstance(n, tuple) else n for n in names}


def test_every_task_runs_on_the_client_passed(sky_qr2, tmp_path):
    archive = tmp_path / "archive"  # a fresh copy: its index is built on the client passed
    shutil.copytree(sky_qr2.archive, archive, ignore=shutil.ignore_patterns("*.parquet"))
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as default_cluster, \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as chosen_cluster, \
            Client(chosen_cluster, set_as_default=False) as chosen, Client(default_cluster) as default:
        config = BatchConfig(**REGION, catalog_path=sky_qr2.catalog, archive=str(archive), output_dir=tmp_path / "run",
                             copy_images=True)  # so that the downloads run too
        summary = BatchPipeline(config, client=chosen).run_all()
        cubes = drizzle(Drizzle3DConfig(150.1, 2.2, 6, 6, detector=2, archive=str(archive),
                                        output_dir=tmp_path / "cube"), client=chosen)
        on_chosen, on_default = _prefixes(chosen), _prefixes(default)
    assert summary.measured > 0 and summary.spectrum_rows > 0 and 2 in cubes
    # archive index, downloads, photometry, the catalog's row counts and partitions, the cube
    assert {"from_sequence", "fetch", "photometry", "catalog-hist", "catalog", "drizzle-partial"} <= on_chosen
    assert on_default == set()


def _half_catalog(sky, path):
    catalog = pd.read_csv(sky.catalog)
    catalog.iloc[::2].to_csv(path, index=False)
    return catalog


def test_reruns_recompute_what_their_inputs_changed(sky_qr2, tmp_path):
    full = _half_catalog(sky_qr2, tmp_path / "half.csv")
    config = BatchConfig(**REGION, catalog_path=tmp_path / "half.csv", archive=str(sky_qr2.archive),
                         output_dir=tmp_path / "run", read_in_place=True)
    first = BatchPipeline(config).run_all()
    again = BatchPipeline(config).run_all()
    assert first.measured > 0 and again.measured == 0
    # a changed photometry field: every image is measured again, every row shows it
    fixed = dataclasses.replace(config, photometry=PhotometryConfig(aperture_method="fixed", aperture_diameter=4.0))
    changed = BatchPipeline(fixed).run_all()
    assert changed.measured == first.measured
    assert (pd.read_parquet(fixed.per_image_dir).aperture_radius == 2.0).all()
    assert (lightcurve_rows(fixed.output_dir).aperture_radius == 2.0).all()
    # sources added to the catalog appear in every image that covers them; exactly the images
    # they fall in (or within the selection's 2 px margin) are measured again
    added = full[~full.targetid.isin(pd.read_csv(tmp_path / "half.csv").targetid)]
    before = {f.name: recorded_fingerprint(f) for f in fixed.per_image_dir.glob("*.parquet")}
    full.to_csv(tmp_path / "half.csv", index=False)
    grown = BatchPipeline(fixed).run_all()
    redone = {f.name for f in fixed.per_image_dir.glob("*.parquet") if recorded_fingerprint(f) != before.get(f.name)}
    inside, near = set(), set()
    for path in sky_qr2.files:
        with L2File(path) as l2:
            x, y = l2.wcs.all_world2pix(added.ra, added.dec, 0)
            ny, nx = l2.shape
            name = file_name(l2.meta.obs_id, l2.meta.detector)
        distance = np.maximum.reduce([-0.5 - x, x - (nx - 0.5), -0.5 - y, y - (ny - 0.5)])  # > 0: outside, px
        inside |= {name} if (distance < -0.1).any() else set()
        near |= {name} if (distance < 3).any() else set()
    assert inside <= redone <= near and grown.measured == len(redone) > 0, (inside, redone, near)
    got = pd.read_parquet(fixed.per_image_dir)
    truth = pd.read_parquet(sky_qr2.truth_detections)
    key = ["filename", "targetid"]
    assert set(map(tuple, got[key].to_numpy())) == set(map(tuple, truth[key].to_numpy()))
    spectra = pd.read_parquet(fixed.sources_path)
    assert set(spectra.targetid) == set(got.targetid)
    # the manifest carries each image's record and the fingerprint of its file
    manifest = pd.read_parquet(fixed.manifest_path)
    assert manifest.version.str.startswith("l2b-v").all() and manifest.fingerprint.str.len().eq(64).all()


def test_the_catalog_records_its_inputs(sky_qr2, tmp_path):
    """Each catalog partition records the fingerprint of what made it; the per-file row
    counts name every per-image file with the fingerprint it was written with."""
    run_extraction(sky_qr2.archive, pd.read_csv(sky_qr2.catalog), PhotometryConfig(), tmp_path / "per_image")
    aggregate_lightcurves(tmp_path / "per_image", tmp_path / "catalog")
    version = current_version(tmp_path / "catalog")
    partitions = pd.read_parquet(version / PARTITIONS)
    assert partitions.fingerprint.str.fullmatch("[0-9a-f]{64}").all() and partitions.n_rows.sum() > 0
    counted = pd.read_parquet(version / HISTOGRAMS).drop_duplicates("file").set_index("file").fingerprint
    files = sorted((tmp_path / "per_image").glob("*.parquet"))
    with_rows = [f for f in files if pd.read_parquet(f, columns=["ra"]).size]
    assert sorted(counted.index) == sorted(f.name for f in with_rows)
    assert all(counted[f.name] == recorded_fingerprint(f) for f in with_rows)


@pytest.mark.parametrize("make, field", [
    (lambda: BatchConfig(**REGION, catalog_path="c.csv", num_buckets=32), "BatchConfig.num_buckets"),
    (lambda: BatchConfig(**REGION, catalog_path="c.csv", max_extract_workers=4), "BatchConfig.max_extract_workers"),
    (lambda: PhotometryConfig(max_processing_workers=2), "PhotometryConfig.max_processing_workers"),
    (lambda: Drizzle3DConfig(150, 2, 5, 5, skip_existing=False), "Drizzle3DConfig.skip_existing"),
])
def test_reference_knobs_warn_when_set(make, field):
    with pytest.warns(ReferenceKnobWarning, match=field) as record:
        make()
    assert record[0].filename == __file__  # the warning points at the caller
    assert field in KNOBS


def test_reference_defaults_do_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceKnobWarning)
        BatchConfig(**REGION, catalog_path="c.csv")
        PhotometryConfig()
        Drizzle3DConfig(150, 2, 5, 5)


CONFIGS = [
    PhotometryConfig(aperture_method="fixed", bad_flags=[0, 6]),
    BatchConfig(**REGION, catalog_path="sky/catalog.csv", bands=["D1", "D3"], mjd_range=(61000, 61100),
                photometry=PhotometryConfig(background_method="window", window_size=(40, 30)),
                spectra=SpectraConfig(false_positive_rate=0.01)),
    Drizzle3DConfig(150.0, 2.0, 30, 20, detector=3, mjd_range=(61000, 61100), exclude_flags=[0, 6]),
    FetchConfig(concurrency=2, retries=1),
    SimConfig(n_images=3, center=(10.0, -5.0), detectors=(1, 4)),
    SpectraConfig(exclude_quality=["edge"], knot_spacing=0.2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_config_round_trips(config, tmp_path):
    cls = type(config)
    config.to_yaml_file(tmp_path / "c.yaml")
    assert cls.from_yaml_file(tmp_path / "c.yaml") == config
    assert cls.from_json(config.to_json()) == config
    assert cls.from_dict(config.to_dict()) == config
    if cls.drop_unknown:  # the reference's PhotometryConfig.from_dict drops unknown keys
        assert cls.from_dict({**config.to_dict(), "nonsense": 1}) == config
    else:
        with pytest.raises(ValueError, match=f"unknown {cls.__name__} field.*nonsense"):
            cls.from_dict({**config.to_dict(), "nonsense": 1})


@pytest.mark.parametrize("make, names", [
    (lambda: BatchConfig(center_ra=10, center_dec=95, radius=1, catalog_path="c.csv"), "BatchConfig.center_ra/center_dec"),
    (lambda: Drizzle3DConfig(400, 2, 5, 5), "Drizzle3DConfig.center_ra/center_dec"),
    (lambda: Source(10, float("nan")), "Source.ra/dec"),
    (lambda: SimConfig(center=(10, -91)), "SimConfig.center"),
    (lambda: RegionQuery(circle=(361, 0, 1)), "position must be"),
])
def test_positions_are_checked_in_one_place(make, names):
    with pytest.raises(ValueError, match=names.replace(".", r"\.")):
        make()


def test_spxdask_leaves_the_users_global_state_alone(sky_qr2, tmp_path):
    """Importing and running spxdask changes no dask setting, matplotlib backend, logger level
    or astropy log level of the user's process (checked in a fresh interpreter)."""
    script = textwrap.dedent(f"""
        import logging
        import dask, distributed, matplotlib  # distributed adds its own defaults when imported
        from astropy import log
        dask.config.set({{"array.chunk-size": "7MiB"}})
        matplotlib.use("svg")
        log.setLevel("DEBUG")
        before_config = dask.config.config.copy()
        before_levels = {{name: lg.level for name, lg in logging.Logger.manager.loggerDict.items()
                          if isinstance(lg, logging.Logger)}}
        import spxdask, spxdask.batch, spxdask.drizzle3d, spxdask.cli, spxdask.demo, spxdask.spectra
        from spxdask.batch import read_lightcurve
        from spxdask.batch.plot import plot_lightcurve, plot_spectrum
        from spxdask.cluster import get_client, setting
        from spxdask.spherex.l2 import L2File
        assert setting("progress") is True
        with L2File({str(sky_qr2.files[0])!r}) as l2:
            l2.spectral_wcs()
        client = get_client(scheduler="local")
        client.close(); client.cluster.close()
        import pandas as pd
        rows = pd.DataFrame({{"targetid": [1, 1], "mjd": [1.0, 2.0], "wavelength": [1.0, 1.2], "detector": [2, 2],
                             "ra": [1.0, 1.0], "dec": [1.0, 1.0], "quality": ["", ""],
                             "flux_total": [1.0, 2.0], "flux_total_error": [0.1, 0.1]}})
        plot_lightcurve(rows, {str(tmp_path / "lc.png")!r})
        plot_spectrum(rows, {str(tmp_path / "sp.png")!r})
        assert dask.config.get("array.chunk-size") == "7MiB"
        assert dask.config.config == before_config, set(dask.config.config) ^ set(before_config)
        assert matplotlib.get_backend() == "svg"
        assert log.level == logging.DEBUG
        after = {{name: lg.level for name, lg in logging.Logger.manager.loggerDict.items()
                  if isinstance(lg, logging.Logger)}}
        changed = {{n: (before_levels[n], after[n]) for n in before_levels if after.get(n) != before_levels[n]}}
        assert not changed, changed
        assert logging.getLogger("distributed.shuffle").level == logging.NOTSET
        print("untouched")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "untouched" in out.stdout, out.stderr[-3000:]
