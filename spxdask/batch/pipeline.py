"""The batch pipeline (reference names): query → download → extract → aggregate (the run's
catalog: light curves, channel spectra, per-source summaries). Every stage reads its inputs
from disk, so each runs alone in a new process, and ``run_all`` resumes."""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from .. import cluster
from ..archive.fetch import FetchConfig, destination, fetch
from ..archive.observation import Observation, Records
from ..archive.query import load as load_query
from ..archive.query import load_summary
from ..catalog import build_catalog
from ..catalog.export import export_csv, write_sources
from ..catalog.versions import SPECTRA
from ..cluster import setting
from ..manifest import manifest_runs, measured_since, write_manifest
from ..per_image import file_name
from ..photometry import PhotometryConfig
from ..record import write_run_record
from ..report import counts, write_report
from ..targets import MemoryTargets, TargetTable, open_targets
from .config import BatchConfig
from .extract import extract_images
from .query import query_region_observations


def load_query_summary(output_dir: str | Path) -> dict:
    """The ``query_summary.yaml`` of a batch run (reference name).

    Parameters
    ----------
    output_dir : path
        The run folder.

    Returns
    -------
    dict
    """
    return load_summary(output_dir)


@dataclass
class RunSummary:
    """What a run did.

    Parameters
    ----------
    images : int
        Images found.
    unreadable : int
        Archive files that could not be read (named in the manifest).
    fetched : int
        Files downloaded.
    measured : int
        Images measured by this run.
    failed : int
        Images that failed (named in the manifest with their error).
    targets : int
        Rows of the input list.
    sources : int
        Sources measured (in the run's catalog).
    left_out : int
        Per-image files of earlier queries kept for reuse but left out of the catalog (a
        narrower rerun).
    rows : int
        Light-curve rows in the catalog.
    spectrum_rows : int
        Channel-spectrum rows.
    variable : int
        Sources flagged variable.
    mixed_releases : int
        Sources measured in more than one release.
    partitions : int
        Catalog partitions in all.
    partitions_rewritten : int
        Catalog partitions this run wrote.
    seconds : dict
        Wall time of each stage.
    note : str
        Why there is nothing to measure, when there is not.
    """

    images: int = 0
    unreadable: int = 0
    fetched: int = 0
    measured: int = 0
    failed: int = 0
    targets: int = 0
    sources: int = 0
    left_out: int = 0
    rows: int = 0
    spectrum_rows: int = 0
    variable: int = 0
    mixed_releases: int = 0
    partitions: int = 0
    partitions_rewritten: int = 0
    seconds: dict = field(default_factory=dict)
    note: str = ""

    def table(self) -> str:
        lines = [self.note] if self.note else []
        if self.left_out:
            lines.append(f"{self.left_out} per-image file(s) of earlier queries are kept in per_image/ for reuse "
                         "but left out of the catalog: they are outside this run's query")
        if self.mixed_releases:
            lines.append(f"{self.mixed_releases} source(s) have measurements from more than one release (QR2 / QR3): "
                         "their calibrations differ (see the release and pipeline_version columns)")
        lines += [f"{'images found':<18}{self.images:>10}", f"{'unreadable':<18}{self.unreadable:>10}",
                  f"{'files fetched':<18}{self.fetched:>10}",
                 f"{'images measured':<18}{self.measured:>10}", f"{'failures':<18}{self.failed:>10}",
                 f"{'targets':<18}{self.targets:>10}",
                 f"{'sources measured':<18}{self.sources:>10}", f"{'rows':<18}{self.rows:>10}",
                 f"{'spectrum rows':<18}{self.spectrum_rows:>10}", f"{'variable':<18}{self.variable:>10}",
                 f"{'partitions':<18}{self.partitions:>10}", f"{'rewritten':<18}{self.partitions_rewritten:>10}"]
        lines += [f"{'time ' + k:<18}{v:>9.1f}s" for k, v in self.seconds.items()]
        return "\n".join(lines)


class BatchPipeline:
    """Multi-source batch photometry: ``run_query``, ``run_download``, ``run_extract``,
    ``run_aggregate``, ``run_all``.

    Parameters
    ----------
    config : BatchConfig
    client : distributed.Client, optional
        Where every stage's tasks run. Default: the running Client at compute time, else
        local threads (:func:`spxdask.cluster.compute`); :func:`spxdask.cluster.get_client`
        is the one place that starts or connects to a cluster.
    """

    def __init__(self, config: BatchConfig, *, client=None):
        self.config = config
        self.client = client
        self.summary = RunSummary()
        config.output_dir.mkdir(parents=True, exist_ok=True)

    # -- stages -----------------------------------------------------------------------------
    def run_query(self):
        """Stage 1: find the images; writes ``query.parquet`` and ``query_summary.yaml``."""
        t0 = time.perf_counter()
        if not self.config.archive:  # said before the query, so that an offline run is understood
            print(f"query: no archive given: asking the TAP service at {self.config.tap_url or setting('irsa.tap_url')}",
                  flush=True)
        found = query_region_observations(self.config, client=self.client)
        found.save(self.config.output_dir)
        if found.unreadable:  # named in the manifest, never skipped in silence
            write_manifest([{"image": url, "status": "unreadable", "error": error} for url, error in found.unreadable],
                           self.config.manifest_path)
        self.summary.seconds["query"] = time.perf_counter() - t0
        self.record()
        return found

    def _observations(self):
        return load_query(self.config.output_dir)

    def run_download(self, skip_existing: bool = True) -> pd.DataFrame:
        """Stage 2: fetch the files into ``images/D<n>/``.

        Nothing is fetched when the files are read in place (:attr:`BatchConfig.in_place`).

        Parameters
        ----------
        skip_existing : bool
            Keep files already downloaded.

        Returns
        -------
        DataFrame
            One row per file; failures also go to the manifest.
        """
        t0 = time.perf_counter()
        found = self._observations()
        if self.config.in_place:
            return pd.DataFrame({"url": found.frame["url"], "path": found.frame["url"], "status": "in place"})
        if not skip_existing:
            for o in found.observations:
                destination(o, self.config.image_dir).unlink(missing_ok=True)
        fetch_config = FetchConfig(concurrency=self.config.max_download_workers)
        with cluster.run_context("download", self.config.layout.performance_report("download"), client=self.client):
            result = fetch(found.to_bag(), self.config.image_dir, fetch_config, storage_options=self.config.storage_options,
                           client=self.client)
        failed = result[result.status == "failed"]
        if len(failed):
            version = dict(zip(found.frame["url"], found.frame["version"]))
            write_manifest([{"image": r.url, "obs_id": r.obs_id, "detector": r.detector, "version": version[r.url],
                             "status": "failed", "error": f"download: {r.error}"} for r in failed.itertuples()],
                            self.config.manifest_path)
        self.summary.fetched = int((result.status == "ok").sum())
        self.summary.seconds["download"] = time.perf_counter() - t0
        self.record()
        return result

    def _images(self) -> Records | list[Observation]:
        """The query's observations that can be measured, each with ``url`` where it is read
        (in place: made as the extraction reaches them; or its downloaded copy)."""
        if self.config.in_place:
            return Records(self._observations().frame)
        found = self._observations().observations
        where = [destination(o, self.config.image_dir) for o in found]
        return [replace(o, url=str(w)) for o, w in zip(found, where) if w.exists()]

    def run_extract(self, skip_existing: bool = True) -> int:
        """Stage 3: photometry of every target in every image.

        Parameters
        ----------
        skip_existing : bool
            Reuse per-image files made from the same image, targets and config.

        Returns
        -------
        int
            The number of images newly measured.
        """
        t0 = time.perf_counter()
        targets, neighbours = self._targets
        earlier = manifest_runs(self.config.manifest_path)
        try:
            with cluster.run_context("extract", self.config.layout.performance_report("extract"), client=self.client):
                n = extract_images(self._images(), targets, self.config.photometry, self.config.per_image_dir,
                                   skip_existing=skip_existing, manifest_path=self.config.manifest_path,
                                   storage_options=self.config.storage_options, neighbours=neighbours,
                                   client=self.client)
        except KeyboardInterrupt:  # what it measured is in the manifest
            self.summary.measured = measured_since(self.config.manifest_path, earlier)
            raise
        self.summary.measured = n
        self.summary.targets = len(targets)
        self.summary.seconds["extract"] = time.perf_counter() - t0
        self.record()
        return n

    def run_aggregate(self, clean: bool = False) -> int:
        """Stage 4: the run's catalog, ``sources.parquet``, ``spectra/`` and the CSVs.

        The catalog (light curves, channel spectra and per-source summaries with the
        variability test) is built or brought up to date: only partitions whose sources gained
        or lost rows, or whose config changed, are rewritten. The per-source CSV files are
        written when ``export_csv``.

        Parameters
        ----------
        clean : bool
            Remove the CSV folder before exporting.

        Returns
        -------
        int
            The number of sources in the catalog.
        """
        t0 = time.perf_counter()
        current = self._current_files()
        with cluster.run_context("aggregate", self.config.layout.performance_report("aggregate"), client=self.client):
            made = build_catalog(self.config.per_image_dir, self.config.catalog_dir, spectra=self.config.spectra,
                                 partition_rows=self.config.partition_rows, only=current, client=self.client)
            if self.config.export_csv:
                export_csv(self.config.catalog_dir, self.config.csv_dir, clean=clean, client=self.client)
        write_sources(self.config.catalog_dir, self.config.sources_path)
        link = self.config.spectra_dir  # the catalog's flat spectra, whichever its version
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link)  # a folder of an earlier layout
            link.symlink_to(Path(self.config.catalog_dir.name) / SPECTRA, target_is_directory=True)
        s = self.summary  # the counts of rows and sources: record() reads them from the catalog
        s.mixed_releases, s.partitions, s.partitions_rewritten = made.mixed_releases, made.partitions, made.rewritten
        s.seconds["aggregate"] = time.perf_counter() - t0
        self.record()
        return made.sources

    def _current_files(self) -> set[str] | None:
        """The names of the per-image files of the images the run's query found (None without a
        query: every file); the others are counted in the summary's ``left_out``."""
        if not self.config.layout.query.exists():
            return None
        current = {file_name(o.obs_id, o.detector) for o in self._observations().observations}
        present = {f.name for f in self.config.per_image_dir.glob("*.parquet")}
        self.summary.left_out = len(present - current)
        return current

    def _measured_rows(self) -> int:
        """Rows in the per-image files of the run's images (from their Parquet footers)."""
        current = self._current_files()
        return sum(pq.read_metadata(f).num_rows for f in self.config.per_image_dir.glob("*.parquet")
                   if current is None or f.name in current)

    @cached_property
    def _targets(self) -> tuple[TargetTable | MemoryTargets, TargetTable | MemoryTargets | None]:
        """The targets and the neighbour catalog (None without one), opened once per pipeline
        (a flat file laid out in the run's ``targets/`` the first time)."""
        c = self.config
        opened = functools.partial(open_targets, cache=c.layout.targets, storage_options=c.storage_options)
        targets = opened(c.catalog_path, id_column=c.id_column, ra_column=c.ra_column, dec_column=c.dec_column)
        near = c.neighbour_catalog_path
        return targets, (opened(near, role="neighbours") if near is not None else None)

    def check_inputs(self) -> None:
        """Read the targets (and the neighbour catalog), so that a typo fails in a second,
        naming the file, before any query or download runs (a missing archive folder fails
        as the query opens it, also before any work).

        Raises
        ------
        CatalogError
        """
        _ = self._targets  # read once, here, for its errors

    def run_all(self, skip_existing: bool = True) -> RunSummary:
        """All four stages, after :meth:`check_inputs`.

        A rerun resumes: the query runs again, finished downloads and images are skipped,
        catalog partitions whose inputs are unchanged are kept.

        Parameters
        ----------
        skip_existing : bool
            Keep finished downloads and per-image files.

        Returns
        -------
        RunSummary
            What the run did.
        """
        t0 = time.perf_counter()
        self.check_inputs()
        self.run_query()  # again on a rerun: images that appeared since are measured, the rest skipped
        self.run_download(skip_existing)
        self.run_extract(skip_existing)
        if self._measured_rows():
            self.run_aggregate(clean=True)
        else:  # an ordinary answer, not an error: say why there are no light curves
            self.summary.note = ("no image covers the region" if self.summary.images == 0
                                 else "no catalog source falls in the images found")
        self.summary.seconds["total"] = time.perf_counter() - t0
        self.record()
        if self.config.report:
            try:
                write_report(self.config.output_dir)
            except Exception as exc:  # noqa: BLE001 - every output of the run is written; the page is a view of them
                logging.getLogger(__name__).warning("report.html not written: %r (rerun `spxdask report %s`)",
                                                    exc, self.config.output_dir)
        return self.summary

    def record(self) -> None:
        """Write ``run.yaml`` (the config, versions, stage times and summary so far), the
        summary's counts brought up to what the run folder holds (a stage run alone counts the
        earlier stages' work; an interrupted one what it wrote). Each stage calls it as it ends."""
        held = counts(self.config.output_dir)
        s = self.summary
        s.images, s.unreadable, s.failed = held["images found"], held["unreadable"], held["failures"]
        s.sources, s.rows, s.spectrum_rows, s.variable = (held["sources"], held["rows"], held["spectrum rows"],
                                                          held["variable"])
        write_run_record(self.config.layout.run_record, self.config.to_dict(), s)


def run_batch(catalog: str, center_ra: float, center_dec: float, radius: float, output_dir: str = "batch_output",
              bands: list[str] | None = None, coverage_mode: str = "any", max_images: int = 500,
              max_download_workers: int = 4, max_extract_workers: int = 12, skip_existing: bool = True,
              photometry_config: PhotometryConfig | None = None, **options) -> BatchPipeline:
    """Run the whole batch pipeline with one call (reference signature).

    Parameters
    ----------
    catalog : str
        The targets (``BatchConfig.catalog_path``).
    center_ra, center_dec, radius : float
        The region (deg).
    output_dir : str
        The run folder.
    bands : list of str, optional
        Detectors to use; default all.
    coverage_mode : {"any", "full"}
        Images overlapping the region, or containing it.
    max_images : int
        At most this many images.
    max_download_workers : int
        Concurrent downloads.
    max_extract_workers : int
        The reference's pool size, accepted and ignored.
    skip_existing : bool
        Resume: keep finished downloads and per-image files.
    photometry_config : PhotometryConfig, optional
        How each image is measured.
    **options
        Further :class:`BatchConfig` fields, such as ``archive`` or ``tap_url``.

    Returns
    -------
    BatchPipeline
        The pipeline, its ``summary`` filled.
    """
    config = BatchConfig(center_ra=center_ra, center_dec=center_dec, radius=radius, catalog_path=catalog,
                         coverage_mode=coverage_mode, bands=bands, max_images=max_images, output_dir=Path(output_dir),
                         max_download_workers=max_download_workers, max_extract_workers=max_extract_workers,
                         photometry=photometry_config or PhotometryConfig(), **options)
    pipeline = BatchPipeline(config)
    pipeline.run_all(skip_existing=skip_existing)
    return pipeline
