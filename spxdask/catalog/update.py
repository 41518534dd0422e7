"""What a build writes: the update plan of a catalog, from the per-image files' row counts.

Every partition records a fingerprint of what made it (its files and their fingerprints, the
spectra config, the package version). Against the previous version, each partition of the
new plan is **kept** (same fingerprint: hard-linked), **grown** (it only gained files: its old
rows plus theirs) or **written** from all its files. Plain functions of frames, no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from hats.pixel_math import HealpixPixel

from .. import __version__, per_image
from ..spectra import SpectraConfig
from .plan import HIGHEST_ORDER, pixel_range, plan
from .versions import HISTOGRAMS, PARTITIONS


@dataclass
class UpdatePlan:
    """The partitions of the new version and how each is made.

    Parameters
    ----------
    partitions : list of HealpixPixel
        Every partition of the new version.
    fingerprints : dict
        Per partition, the fingerprint of what makes it.
    kept : list of HealpixPixel
        Partitions whose fingerprint is unchanged: hard-linked from the previous version.
    grown : dict
        Per partition that only gained files, those files (its old rows are read too).
    reads : dict
        Per partition to write (grown or not), the per-image files it reads, in pixel order.
    """

    partitions: list[HealpixPixel]
    fingerprints: dict[HealpixPixel, str]
    kept: list[HealpixPixel]
    grown: dict[HealpixPixel, list[str]]
    reads: dict[HealpixPixel, list[str]]

    def needs(self) -> dict[str, list[HealpixPixel]]:
        """Per file, the partitions being written that read it (sorted by file name)."""
        out: dict[str, list[HealpixPixel]] = {}
        for pixel, names in self.reads.items():
            for name in names:
                out.setdefault(name, []).append(pixel)
        return dict(sorted(out.items()))


def unchanged(fingerprints: dict[str, str | None], name: str, recorded: Any) -> bool:
    """Whether file ``name`` is here with the fingerprint a version recorded for it (a null
    read back from Parquet: a file written without one)."""
    return name in fingerprints and fingerprints[name] == (recorded if isinstance(recorded, str) else None)


def read_histograms(version: Path | None) -> pd.DataFrame | None:
    """The per-file histograms a version was built from (names and fingerprints categorical)."""
    if version is None or not (version / HISTOGRAMS).exists():
        return None
    frame = pq.read_table(version / HISTOGRAMS, read_dictionary=["file", "fingerprint"]).to_pandas()
    return frame.astype({"file": "category", "fingerprint": "category"})  # also a column of nulls only


def read_partitions(version: Path | None) -> pd.DataFrame:
    """The partitions of a version (norder, npix, fingerprint, counts); none without one."""
    if version is None:
        return pd.DataFrame(columns=["norder", "npix", "fingerprint"])
    return pd.read_parquet(version / PARTITIONS)


def counted(known: pd.DataFrame | None, fingerprints: dict[str, str | None]) -> set[str]:
    """The files whose rows per pixel the previous version's histograms (``known``) still tell."""
    if known is None:
        return set()
    files = known[["file", "fingerprint"]].drop_duplicates()
    return {f for f, fp in zip(files["file"], files["fingerprint"]) if unchanged(fingerprints, f, fp)}


def histogram_frame(known: pd.DataFrame | None, done: set[str], counts: list[tuple[str, np.ndarray, np.ndarray]],
                    fingerprints: dict[str, str | None]) -> pd.DataFrame:
    """Rows per fine pixel of every file (file, fingerprint, pixel, count; names and
    fingerprints categorical): ``known``'s rows of the ``done`` files, then the new ``counts``."""
    parts = [known[known["file"].isin(done)]] if known is not None else []
    for name, pix, cnt in counts:
        parts.append(pd.DataFrame({"file": pd.Categorical([name] * len(pix)),
                                   "fingerprint": pd.Categorical([fingerprints[name]] * len(pix)),
                                   "pixel": pix.astype(np.int64), "count": cnt.astype(np.int64)}))
    if not parts:
        return pd.DataFrame({"file": pd.Categorical([]), "fingerprint": pd.Categorical([]),
                             "pixel": np.empty(0, np.int64), "count": np.empty(0, np.int64)})
    return pd.DataFrame({c: _stack([p[c] for p in parts]) for c in ("file", "fingerprint")}
                        | {c: np.concatenate([p[c].to_numpy() for p in parts]) for c in ("pixel", "count")})


def _stack(columns: list[pd.Series]) -> pd.Categorical:
    """Categorical columns one after the other, on the union of their categories (by code: no
    string is compared per row)."""
    categories = pd.Index(np.concatenate([c.cat.categories.to_numpy(object) for c in columns])).unique()
    codes = [np.append(categories.get_indexer(c.cat.categories.to_numpy(object)), -1)[c.cat.codes]  # -1: null
             for c in columns]
    return pd.Categorical.from_codes(np.concatenate(codes), categories)


def partition_fingerprint(pixel: HealpixPixel, files: list[tuple[str, str | None]], spectra: SpectraConfig | None) -> str:
    """What makes a partition: its pixel, its files and their fingerprints, the spectra config, the version."""
    return per_image.digest({"pixel": [pixel.order, pixel.pixel], "files": sorted(files), "version": __version__,
                             "spectra": spectra.to_dict() if spectra else None})


def _added(pixel: HealpixPixel, feeds: list[str], before: pd.DataFrame,
           fingerprints: dict[str, str | None]) -> list[str] | None:
    """The files that feed ``pixel`` now and did not in the previous version (``before``: its
    row counts per file), when every file that fed it then is still here unchanged (the
    partition only gained rows: it is its old rows plus theirs); None otherwise."""
    lo, hi = pixel_range(pixel, HIGHEST_ORDER)
    fed = before[(before["pixel"] >= lo) & (before["pixel"] < hi)].drop_duplicates("file")
    if not all(unchanged(fingerprints, f, fp) for f, fp in zip(fed["file"], fed["fingerprint"])):
        return None
    return sorted(set(feeds) - set(fed["file"]))


def plan_update(hist: pd.DataFrame, fingerprints: dict[str, str | None], before: pd.DataFrame | None,
                old: pd.DataFrame, partition_rows: int, spectra: SpectraConfig | None) -> UpdatePlan:
    """The partitions of the new version (hats' alignment rule on the pixels holding rows,
    keeping the previous version's where they still fit) and how each is made.

    Parameters
    ----------
    hist : DataFrame
        Rows per fine pixel of every file (:func:`histogram_frame`).
    fingerprints : dict
        Per file name, its fingerprint.
    before : DataFrame or None
        The previous version's histograms.
    old : DataFrame
        The previous version's partitions (:func:`read_partitions`).
    partition_rows : int
        Light-curve rows per partition at most.
    spectra : SpectraConfig or None
        How the spectra are made (its flux column resolved).

    Returns
    -------
    UpdatePlan
    """
    existing = [HealpixPixel(int(o), int(p)) for o, p in zip(old["norder"], old["npix"])]
    by_file = {name: g.sort_values("pixel") for name, g in hist.groupby("file", observed=True)}
    partitions = plan([(g["pixel"].to_numpy(), g["count"].to_numpy()) for g in by_file.values()], partition_rows,
                      existing)
    feeds: dict[HealpixPixel, list[str]] = {p: [] for p in partitions}
    for name, g in by_file.items():
        pix = g["pixel"].to_numpy()
        for p, (lo, hi) in partitions.items():
            a, b = np.searchsorted(pix, [lo, hi])
            if b > a:
                feeds[p].append(str(name))
    made = {p: partition_fingerprint(p, [(n, fingerprints[n]) for n in feeds[p]], spectra) for p in partitions}
    was = {HealpixPixel(int(o), int(p)): f for o, p, f in zip(old["norder"], old["npix"], old["fingerprint"])}
    kept = [p for p in partitions if was.get(p) == made[p]]
    todo = sorted((p for p in partitions if p not in kept), key=lambda p: pixel_range(p, 29))
    added = {p: _added(p, feeds[p], before, fingerprints) for p in todo if p in was and before is not None}
    grown = {p: names for p, names in added.items() if names is not None}
    return UpdatePlan(partitions=list(partitions), fingerprints=made, kept=kept, grown=grown,
                      reads={p: grown.get(p, feeds[p]) for p in todo})
