"""The catalog's versions on disk.

``<catalog_dir>`` is a symbolic link to a complete version under ``.<name>-versions/`` beside
it. A build writes a new version beside the current one and swaps the link in one atomic
rename, so a reader never opens a half-written catalog and a killed build leaves the last one
whole. Partitions whose inputs are unchanged are hard-linked from the previous version (same
bytes, same modification time). Here: where each file of a version lies, the link, the swap.

A version is a HATS collection (:mod:`spxdask.catalog.margin`): the catalog under
:data:`MAIN`, its margin cache beside it; the flat spectra and spxdask's own records (the
partitions, histograms and id index) at the version's top.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
from hats.io import paths
from hats.pixel_math import HealpixPixel

#: In each version: the partitions (pixel, fingerprint, counts), the per-file histograms, the id index.
PARTITIONS, HISTOGRAMS, ID_INDEX = "_partitions.parquet", "_histograms.parquet", "targetid_index.parquet"
#: The folder of each version's flat channel spectra.
SPECTRA = "spectra"
#: The HATS catalog's folder in a version (the collection's primary table).
MAIN = "lightcurves"


def current_version(catalog_dir: Path) -> Path | None:
    """The version folder ``catalog_dir`` points to (None when there is no catalog yet)."""
    return catalog_dir.resolve() if catalog_dir.is_symlink() and catalog_dir.resolve().is_dir() else None


def versions_dir(catalog_dir: Path) -> Path:
    """``.<name>-versions/`` beside the catalog: every version, and the shards of a build."""
    return catalog_dir.parent / f".{catalog_dir.name}-versions"


def main_catalog(version: Path) -> Path:
    """The HATS catalog of a version (a version of an earlier layout is one itself)."""
    return version / MAIN if (version / MAIN).is_dir() or not (version / "partition_info.csv").exists() else version


def partition_path(version: Path, pixel: HealpixPixel) -> Path:
    """The data file of one partition (hats' layout)."""
    return Path(str(paths.pixel_catalog_file(main_catalog(version), pixel)))


def spectra_path(version: Path, pixel: HealpixPixel) -> Path:
    """The flat channel spectra of one partition."""
    return version / SPECTRA / f"Norder={pixel.order}_Npix={pixel.pixel}.parquet"


def partition_files(version: Path) -> list[Path]:
    """The data files of a catalog version, in partition_info order."""
    frame = pd.read_csv(main_catalog(version) / "partition_info.csv")
    return [partition_path(version, HealpixPixel(int(o), int(p))) for o, p in zip(frame["Norder"], frame["Npix"])]


def link(old: Path, new: Path) -> None:
    """Hard-link a file of the previous version into the new one."""
    new.parent.mkdir(parents=True, exist_ok=True)
    os.link(old, new)


def swap(catalog_dir: Path, version: Path) -> None:
    """Point ``catalog_dir`` at ``version`` in one atomic rename of a new link."""
    new_link = catalog_dir.with_name(f".{catalog_dir.name}.link-{uuid.uuid4().hex[:8]}")
    new_link.symlink_to(os.path.relpath(version, catalog_dir.parent), target_is_directory=True)
    if catalog_dir.exists() and not catalog_dir.is_symlink():
        shutil.rmtree(catalog_dir)  # a catalog of an earlier layout
    os.replace(new_link, catalog_dir)
