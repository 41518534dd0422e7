"""The catalog stage on Dask: per-image files → a HATS catalog of light curves and spectra.

No shuffle on targetid: every row knows its source's position, so its HEALPix partition is
known where it lies. The stage runs, as hats-import does, a plan, task bodies and this short
orchestration: one ``catalog-hist-…`` task per new per-image file counts its rows per fine
pixel (:func:`.tasks.histogram`); the update plan (:mod:`.update`) says which partitions are
kept, grown or written; one ``catalog-split-…`` task per file that feeds a partition being
written splits its rows into shards; one ``catalog-<order>-<pixel>`` task per partition
writes it (:func:`.tasks.write_partition`); the new version (:mod:`.versions`) gets its
metadata (:mod:`.metadata`) and replaces the old one in one atomic swap.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import dask
import pandas as pd
import pyarrow.parquet as pq
from hats.pixel_math import HealpixPixel

from .. import per_image
from .._io import write_parquet_atomic
from ..cluster import compute
from ..spectra import SpectraConfig
from ..spectra.config import chosen_flux
from . import margin, tasks, update, versions
from .metadata import write_hats_metadata, write_index

#: light-curve rows per partition at most (a single fine pixel may hold more)
PARTITION_ROWS = 500_000


@dataclass
class CatalogBuild:
    """What a build made.

    Parameters
    ----------
    sources : int
        Sources in the catalog.
    rows : int
        Light-curve rows.
    spectrum_rows : int
        Channel-spectrum rows.
    variable : int
        Sources flagged variable.
    mixed_releases : int
        Sources measured in more than one release (QR2 and QR3).
    partitions : int
        Partitions in all.
    rewritten : int
        Partitions this build wrote.
    """

    sources: int
    rows: int
    spectrum_rows: int
    variable: int
    mixed_releases: int
    partitions: int
    rewritten: int

    @classmethod
    def of(cls, records: pd.DataFrame, rewritten: int) -> CatalogBuild:
        """The counts of a version's partition records.

        Parameters
        ----------
        records : DataFrame
            One row per partition (n_sources, n_rows, n_spectrum_rows, n_variable, n_mixed).
        rewritten : int
            Partitions the build wrote.

        Returns
        -------
        CatalogBuild
        """
        return cls(sources=int(records["n_sources"].sum()), rows=int(records["n_rows"].sum()),
                   spectrum_rows=int(records["n_spectrum_rows"].sum()), variable=int(records["n_variable"].sum()),
                   mixed_releases=int(records["n_mixed"].sum()), partitions=len(records), rewritten=rewritten)


def _histograms(files: list[Path], fingerprints: dict[str, str | None], known: pd.DataFrame | None,
                client) -> pd.DataFrame:
    """Rows per fine pixel of every file: the previous version's for files it counted with the
    same fingerprint, one task for each other file."""
    done = update.counted(known, fingerprints)
    todo = [f for f in files if f.name not in done]
    jobs = [dask.delayed(tasks.histogram, pure=False)(str(f), dask_key_name=f"catalog-hist-{f.stem}") for f in todo]
    return update.histogram_frame(known, done, list(compute(*jobs, client=client)) if jobs else [], fingerprints)


def _write_margin(version: Path, pixels: list[HealpixPixel], client) -> None:
    """The version's margin cache, one ``catalog-margin-…`` task per partition (each reads the
    partitions beside it), and the collection that names it."""
    order = margin.margin_order(pixels)
    jobs = [dask.delayed(margin.write_partition, pure=False)(
                p, str(versions.partition_path(version, p)), [str(versions.partition_path(version, q)) for q in near],
                order, str(margin.partition_path(version, p)), dask_key_name=f"catalog-margin-{p.order}-{p.pixel}")
            for p, near in margin.neighbours(pixels, order).items()]
    rows = sum(compute(*jobs, client=client)) if jobs else 0
    margin.write_metadata(version / margin.MARGIN, pixels, int(rows), order)
    margin.write_collection(version)


def build_catalog(per_image_dir: str | Path, catalog_dir: str | Path, *, spectra: SpectraConfig | None = None,
                  partition_rows: int = PARTITION_ROWS, only: Collection[str] | None = None,
                  client=None) -> CatalogBuild:
    """Build (or bring up to date) the HATS catalog of the per-image files.

    Parameters
    ----------
    per_image_dir : path
        The per-image Parquet files.
    catalog_dir : path
        The catalog (``<output_dir>/catalog``): a link to its current version.
    spectra : SpectraConfig, optional
        How the ``spectrum`` column and the summaries are made; None: light curves only.
    partition_rows : int
        Light-curve rows per partition at most.
    only : collection of str, optional
        The names of the per-image files the catalog is made of (a run's current images);
        default every file of the folder. Others stay in the folder, out of the catalog.
    client : distributed.Client, optional
        Where the tasks run (default: the running Client, else local threads).

    Returns
    -------
    CatalogBuild
        What the build made.
    """
    per_image_dir = Path(per_image_dir)
    catalog_dir = Path(catalog_dir)
    files = sorted(f for f in per_image_dir.glob("*.parquet") if only is None or f.name in only)
    if not files:
        raise FileNotFoundError(f"no per-image Parquet files in {per_image_dir}")
    fingerprints = {f.name: per_image.recorded_fingerprint(f) for f in files}
    previous = versions.current_version(catalog_dir)
    spectra = chosen_flux(spectra, files) if spectra is not None else None
    before = update.read_histograms(previous)
    hist = _histograms(files, fingerprints, before, client)
    if hist.empty:
        raise ValueError(f"no photometry rows in {per_image_dir}: no catalog source fell in any image")
    old = update.read_partitions(previous)
    plan = update.plan_update(hist, fingerprints, before, old, partition_rows, spectra)
    if previous is not None and len(plan.kept) == len(plan.partitions) == len(old):
        return CatalogBuild.of(old, rewritten=0)

    all_versions = versions.versions_dir(catalog_dir)
    version = all_versions / f"v-{uuid.uuid4().hex[:12]}"
    shards = all_versions / f"{version.name}.shards"
    version.mkdir(parents=True)
    try:
        targetid_type = pq.read_schema(files[0]).field("targetid").type
        for p in plan.kept:
            versions.link(versions.partition_path(previous, p), versions.partition_path(version, p))  # type: ignore[arg-type]
            if spectra is not None:
                versions.link(versions.spectra_path(previous, p), versions.spectra_path(version, p))  # type: ignore[arg-type]
        for p in plan.reads:
            tasks.shard_folder(shards, p).mkdir(parents=True)
        splits = {name: dask.delayed(tasks.split, pure=False)(str(per_image_dir / name), pixels, str(shards),
                                                              dask_key_name=f"catalog-split-{Path(name).stem}")
                  for name, pixels in plan.needs().items()}
        jobs = [dask.delayed(tasks.write_partition, pure=False)(
                    p, str(shards), str(version), spectra, targetid_type,
                    str(versions.partition_path(previous, p)) if p in plan.grown else None,  # type: ignore[arg-type]
                    *(splits[n] for n in names), dask_key_name=f"catalog-{p.order}-{p.pixel}")
                for p, names in plan.reads.items()]
        results = list(compute(*jobs, client=client)) if jobs else []
        shutil.rmtree(shards)
        records = pd.DataFrame([{k: v for k, v in r.items() if k != "targetid"} for r in results])
        if plan.kept:
            kept = old.set_index(["norder", "npix"]).loc[[(p.order, p.pixel) for p in plan.kept]].reset_index()
            records = pd.concat([kept.drop(columns="fingerprint"), records], ignore_index=True)
        records["fingerprint"] = [plan.fingerprints[HealpixPixel(int(o), int(p))]
                                  for o, p in zip(records.norder, records.npix)]
        write_index(version, previous, plan.kept, results, targetid_type)
        write_parquet_atomic(records, version / versions.PARTITIONS)
        write_parquet_atomic(hist, version / versions.HISTOGRAMS)
        write_hats_metadata(version, plan.partitions, hist, records["n_sources"])
        _write_margin(version, plan.partitions, client)
        versions.swap(catalog_dir, version)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        shutil.rmtree(shards, ignore_errors=True)
        raise
    for stale in all_versions.iterdir():  # earlier versions (and those of killed builds)
        if stale != version:
            shutil.rmtree(stale, ignore_errors=True)
    return CatalogBuild.of(records, rewritten=len(results))
