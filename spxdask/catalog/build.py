"""The catalog stage: per-image files → a HATS catalog of light curves and spectra, on Dask.

No shuffle on targetid: every row knows its source's position, so its HEALPix partition is
known where it lies. One ``catalog-hist-…`` task per new per-image file counts its rows per
fine pixel; the plan (:mod:`.plan`) turns the counts into partitions; one ``catalog-split-…``
task per file that feeds a partition being written splits its rows into one shard per
partition (each file read once); one ``catalog-<order>-<pixel>`` task per partition gathers
its shards, computes the spectra and summaries of its sources
(:func:`~spxdask.spectra.kernel.spectra_of`) and writes the partition (:mod:`.nested`) and its
flat spectra. Memory per task: one partition (at most ``partition_rows`` light-curve rows) or
one file.

Versions: ``<catalog_dir>`` is a symbolic link to a complete version under
``.<name>-versions/`` beside it; a build writes a new version beside it and swaps the link (one atomic
rename), so a reader never opens a half-written catalog and a killed build leaves the last
one whole. Each partition records a fingerprint of what made it (its files and their
fingerprints, the spectra config, the package version): a partition whose fingerprint is
unchanged is hard-linked into the new version (same bytes, same modification time), so new
images rewrite only the partitions their rows fall in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import hats
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq
from hats.catalog import PartitionInfo, TableProperties
from hats.io import paths
from hats.io.skymap import write_skymap
from hats.pixel_math import HealpixPixel
from hats.pixel_math.spatial_index import compute_spatial_index

from .. import __version__
from .._io import coded_columns, write_parquet_atomic
from ..cluster import compute
from ..spectra import SpectraConfig
from ..spectra.binning import UNITS as SPECTRUM_UNITS
from ..spectra.kernel import INPUT_COLUMNS, spectra_of
from .nested import HEALPIX_29, LIGHTCURVE, SOURCES_PER_ROW_GROUP, SPECTRUM, keys, nest, unnest
from .plan import HIGHEST_ORDER, fine_pixels, pixel_range, plan

#: light-curve rows per partition at most (a single fine pixel may hold more)
PARTITION_ROWS = 500_000
SKYMAP_ORDER = 7
#: in each version: the partitions (pixel, fingerprint, counts), the per-file histograms, the id index
PARTITIONS, HISTOGRAMS, ID_INDEX = "_partitions.parquet", "_histograms.parquet", "targetid_index.parquet"
SPECTRA = "spectra"
SORT_KEYS = ["targetid", "mjd", "wavelength"]


@dataclass
class CatalogBuild:
    """What a build made: sources, light-curve rows, spectrum rows, variable sources, sources
    measured in more than one release; partitions in all and rewritten by this build."""

    sources: int
    rows: int
    spectrum_rows: int
    variable: int
    mixed_releases: int
    partitions: int
    rewritten: int


def current_version(catalog_dir: Path) -> Path | None:
    """The version folder ``catalog_dir`` points to (None when there is no catalog yet)."""
    return catalog_dir.resolve() if catalog_dir.is_symlink() and catalog_dir.resolve().is_dir() else None


def _histogram(path: str) -> tuple[str, np.ndarray, np.ndarray]:
    table = pq.read_table(path, columns=["ra", "dec"])
    return (Path(path).name, *fine_pixels(table.column("ra").to_numpy(), table.column("dec").to_numpy()))


def _histograms(files: list[Path], fingerprints: dict[str, str | None], known: pd.DataFrame | None,
                client) -> pd.DataFrame:
    """Rows per fine pixel of every file (name, fingerprint, pixel, count; names and
    fingerprints categorical): those of the previous version (``known``) for files it counted
    with the same fingerprint, new tasks for the rest."""
    parts, done = [], set()
    if known is not None:
        counted = known[["file", "fingerprint"]].drop_duplicates()
        done = {f for f, fp in zip(counted["file"], counted["fingerprint"]) if _unchanged(fingerprints, f, fp)}
        parts.append(known[known["file"].isin(done)])
    todo = [f for f in files if f.name not in done]
    tasks = [dask.delayed(_histogram, pure=False)(str(f), dask_key_name=f"catalog-hist-{f.stem}") for f in todo]
    for name, pix, cnt in compute(*tasks, client=client) if tasks else []:
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


def _unchanged(fingerprints: dict[str, str | None], name: str, recorded: Any) -> bool:
    """Whether file ``name`` is here with the fingerprint a version recorded for it (a null
    read back from Parquet: a file written without one)."""
    return name in fingerprints and fingerprints[name] == (recorded if isinstance(recorded, str) else None)


def _read_histograms(version: Path | None) -> pd.DataFrame | None:
    """The per-file histograms a version was built from (names and fingerprints categorical)."""
    if version is None or not (version / HISTOGRAMS).exists():
        return None
    frame = pq.read_table(version / HISTOGRAMS, read_dictionary=["file", "fingerprint"]).to_pandas()
    return frame.astype({"file": "category", "fingerprint": "category"})  # also a column of nulls only


def _fingerprint(pixel: HealpixPixel, files: list[tuple[str, str | None]], spectra: SpectraConfig | None) -> str:
    made_from = {"pixel": [pixel.order, pixel.pixel], "files": sorted(files), "version": __version__,
                 "spectra": spectra.to_dict() if spectra else None}
    return hashlib.sha256(json.dumps(made_from, sort_keys=True, default=str).encode()).hexdigest()


def _partition_path(version: Path, pixel: HealpixPixel) -> Path:
    return Path(str(paths.pixel_catalog_file(version, pixel)))


def _spectra_path(version: Path, pixel: HealpixPixel) -> Path:
    return version / SPECTRA / f"Norder={pixel.order}_Npix={pixel.pixel}.parquet"


def _split(path: str, pixels: list[HealpixPixel], shards: str) -> int:
    """Write the rows of one per-image file that fall in ``pixels`` (the partitions being
    written; sorted, disjoint) as one shard per partition, ``<shards>/<order>-<pixel>/<file>``;
    the rows written. Each file is read once, whatever the number of partitions it meets."""
    table = pq.read_table(path)
    hp29 = compute_spatial_index(table.column("ra").to_numpy(), table.column("dec").to_numpy())
    ranges = np.array([pixel_range(p, 29) for p in pixels])
    k = np.searchsorted(ranges[:, 0], hp29, side="right") - 1
    inside = np.flatnonzero((k >= 0) & (hp29 < ranges[np.maximum(k, 0), 1]))
    order = inside[np.argsort(k[inside], kind="stable")]
    table, k = table.take(order), k[order]
    bounds = np.searchsorted(k, np.arange(len(pixels) + 1))
    for j in np.flatnonzero(np.diff(bounds)):  # shards are transient: uncompressed Arrow, fast both ways
        shard = Path(shards) / f"{pixels[j].order}-{pixels[j].pixel}" / f"{Path(path).stem}.arrow"
        feather.write_feather(table.slice(bounds[j], bounds[j + 1] - bounds[j]), shard, compression="uncompressed")
    return table.num_rows


def _write_partition(pixel: HealpixPixel, shards: str, version: str, spectra: SpectraConfig | None,
                     targetid_type: pa.DataType, base: str | None, *split: int) -> dict:
    """Gather the rows of ``pixel`` from its shards (``split``: the splits that wrote them) and,
    when it only gained files, from its ``base`` partition of the previous version; write its
    partition (and flat spectra); its counts and the targetids in stored order."""
    folder = Path(shards) / f"{pixel.order}-{pixel.pixel}"
    parts = [feather.read_table(f) for f in sorted(folder.iterdir())]
    if base is not None:
        earlier = unnest(pq.read_table(base, columns=[*keys(LIGHTCURVE), LIGHTCURVE]), LIGHTCURVE)
        parts.insert(0, earlier.cast(parts[0].schema) if parts else earlier)
    rows = pa.concat_tables(parts)
    rows = rows.take(pc.sort_indices(rows, [(k, "ascending") for k in SORT_KEYS]))  # stays in Arrow: text too
    if spectra is not None:
        per_channel, sources = spectra_of(rows.select(spectra_inputs(spectra)).to_pandas(), spectra)
    else:
        ids = rows.column("targetid").to_numpy()
        first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        sources = pd.DataFrame({"targetid": ids[first], "ra": rows.column("ra").to_numpy()[first],
                                "dec": rows.column("dec").to_numpy()[first],
                                "n_obs": np.diff(np.r_[first, ids.size]).astype(np.int32)})
        per_channel = None
    healpix = compute_spatial_index(sources["ra"].to_numpy(), sources["dec"].to_numpy())
    table = nest(rows, sources, per_channel, healpix, targetid_type)
    out = _partition_path(Path(version), pixel)
    write_parquet_atomic(table, out, row_group_size=SOURCES_PER_ROW_GROUP, use_dictionary=coded_columns(table.schema))
    if per_channel is not None:
        flat = pa.Table.from_pandas(per_channel, preserve_index=False)
        schema = pa.schema([pa.field(f.name, targetid_type if f.name == "targetid" else f.type,
                                     metadata={"unit": SPECTRUM_UNITS[f.name]} if f.name in SPECTRUM_UNITS else None)
                            for f in flat.schema], metadata={"spxdask.units": json.dumps(SPECTRUM_UNITS)})
        write_parquet_atomic(flat.cast(schema), _spectra_path(Path(version), pixel), use_dictionary=coded_columns(schema))
    releases = rows.group_by("targetid").aggregate([("release", "count_distinct")]).column(1)
    mixed = int(pc.sum(pc.greater(releases, 1)).as_py() or 0)
    shutil.rmtree(folder)
    return {"norder": pixel.order, "npix": pixel.pixel, "n_sources": len(sources), "n_rows": rows.num_rows,
            "n_spectrum_rows": 0 if per_channel is None else len(per_channel),
            "n_variable": int(sources["variable"].sum()) if "variable" in sources else 0, "n_mixed": mixed,
            "targetid": sources["targetid"].to_numpy()}


def _added(pixel: HealpixPixel, feeds: list[str], before: pd.DataFrame,
           fingerprints: dict[str, str | None]) -> list[str] | None:
    """The files that feed ``pixel`` now and did not in the previous version (``before``: its
    row counts per file), when every file that fed it then is still here unchanged (the
    partition only gained rows: it is its old rows plus theirs); None otherwise."""
    lo, hi = pixel_range(pixel, HIGHEST_ORDER)
    fed = before[(before["pixel"] >= lo) & (before["pixel"] < hi)].drop_duplicates("file")
    if not all(_unchanged(fingerprints, f, fp) for f, fp in zip(fed["file"], fed["fingerprint"])):
        return None
    return sorted(set(feeds) - set(fed["file"]))


def _link(old: Path, new: Path) -> None:
    new.parent.mkdir(parents=True, exist_ok=True)
    os.link(old, new)


def build_catalog(per_image_dir: str | Path, catalog_dir: str | Path, *, spectra: SpectraConfig | None = None,
                  partition_rows: int = PARTITION_ROWS, client=None) -> CatalogBuild:
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
    client : distributed.Client, optional
        Where the tasks run (default: the running Client, else local threads).

    Returns
    -------
    CatalogBuild
    """
    per_image = Path(per_image_dir)
    catalog_dir = Path(catalog_dir)
    files = sorted(per_image.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no per-image Parquet files in {per_image}")
    from ..batch.extract import recorded_fingerprint  # batch imports this module

    fingerprints = {f.name: recorded_fingerprint(f) for f in files}
    previous = current_version(catalog_dir)
    spectra = chosen_flux(spectra, files) if spectra is not None else None
    before = _read_histograms(previous)
    hist = _histograms(files, fingerprints, before, client)
    if hist.empty:
        raise ValueError(f"no photometry rows in {per_image}: no catalog source fell in any image")
    old = pd.read_parquet(previous / PARTITIONS) if previous else pd.DataFrame(columns=["norder", "npix", "fingerprint"])
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
    made = {p: _fingerprint(p, [(n, fingerprints[n]) for n in feeds[p]], spectra) for p in partitions}
    was = {HealpixPixel(int(o), int(p)): f for o, p, f in zip(old["norder"], old["npix"], old["fingerprint"])}
    keep = [p for p in partitions if was.get(p) == made[p]]
    if previous is not None and len(keep) == len(partitions) == len(was):
        return _summary(pd.read_parquet(previous / PARTITIONS), rewritten=0)

    versions = catalog_dir.parent / f".{catalog_dir.name}-versions"
    version = versions / f"v-{uuid.uuid4().hex[:12]}"
    version.mkdir(parents=True)
    try:
        targetid_type = pq.read_schema(files[0]).field("targetid").type
        for p in keep:
            _link(_partition_path(previous, p), _partition_path(version, p))  # type: ignore[arg-type]
            if spectra is not None:
                _link(_spectra_path(previous, p), _spectra_path(version, p))  # type: ignore[arg-type]
        todo = sorted((p for p in partitions if p not in keep), key=lambda p: pixel_range(p, 29))
        added = {p: _added(p, feeds[p], before, fingerprints) for p in todo if p in was and before is not None}
        grown = {p: names for p, names in added.items() if names is not None}
        reads = {p: grown.get(p, feeds[p]) for p in todo}  # the files each partition reads
        shards = versions / f"{version.name}.shards"
        for p in todo:
            (shards / f"{p.order}-{p.pixel}").mkdir(parents=True)
        needs: dict[str, list[HealpixPixel]] = {}
        for p in todo:
            for name in reads[p]:
                needs.setdefault(name, []).append(p)
        splits = {name: dask.delayed(_split, pure=False)(str(per_image / name), pixels, str(shards),
                                                         dask_key_name=f"catalog-split-{Path(name).stem}")
                  for name, pixels in sorted(needs.items())}
        tasks = [dask.delayed(_write_partition, pure=False)(
                     p, str(shards), str(version), spectra, targetid_type,
                     str(_partition_path(previous, p)) if p in grown else None,  # type: ignore[arg-type]
                     *(splits[n] for n in reads[p]), dask_key_name=f"catalog-{p.order}-{p.pixel}")
                 for p in todo]
        results = list(compute(*tasks, client=client)) if tasks else []
        shutil.rmtree(shards)
        records = pd.DataFrame([{k: v for k, v in r.items() if k != "targetid"} for r in results])
        if keep:
            kept = old.set_index(["norder", "npix"]).loc[[(p.order, p.pixel) for p in keep]].reset_index()
            records = pd.concat([kept.drop(columns="fingerprint"), records], ignore_index=True)
        records["fingerprint"] = [made[HealpixPixel(int(o), int(p))] for o, p in zip(records.norder, records.npix)]
        _write_index(version, previous, keep, results, targetid_type)
        write_parquet_atomic(records, version / PARTITIONS)
        write_parquet_atomic(hist, version / HISTOGRAMS)
        _write_hats_metadata(version, list(partitions), hist, records["n_sources"])
        _swap(catalog_dir, version)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        shutil.rmtree(versions / f"{version.name}.shards", ignore_errors=True)
        raise
    for stale in versions.iterdir():  # earlier versions (and those of killed builds)
        if stale != version:
            shutil.rmtree(stale, ignore_errors=True)
    return _summary(records, rewritten=len(results))


def partition_files(version: Path) -> list[Path]:
    """The data files of a catalog version, in partition_info order."""
    frame = pd.read_csv(version / "partition_info.csv")
    return [_partition_path(version, HealpixPixel(int(o), int(p))) for o, p in zip(frame["Norder"], frame["Npix"])]


def write_sources(catalog_dir: Path, path: Path) -> int:
    """``sources.parquet``: the catalog's base columns (one row per source, by targetid)."""
    version = current_version(catalog_dir)
    if version is None:
        raise FileNotFoundError(f"no catalog in {catalog_dir}")
    files = partition_files(version)
    names = [n for n in pq.read_schema(files[0]).names if n not in (LIGHTCURVE, SPECTRUM, HEALPIX_29)]
    table = pa.concat_tables([pq.read_table(f, columns=names) for f in files]).sort_by("targetid")
    write_parquet_atomic(table, path)
    return table.num_rows


def _summary(records: pd.DataFrame, rewritten: int) -> CatalogBuild:
    return CatalogBuild(sources=int(records["n_sources"].sum()), rows=int(records["n_rows"].sum()),
                        spectrum_rows=int(records["n_spectrum_rows"].sum()), variable=int(records["n_variable"].sum()),
                        mixed_releases=int(records["n_mixed"].sum()), partitions=len(records), rewritten=rewritten)


def _write_index(version: Path, previous: Path | None, keep: list[HealpixPixel], results: list[dict],
                 targetid_type: pa.DataType) -> None:
    """``targetid_index.parquet``: per source its partition and row, sorted by targetid."""
    frames = []
    if keep and previous is not None:
        old = pd.read_parquet(previous / ID_INDEX)
        kept = pd.MultiIndex.from_frame(old[["norder", "npix"]]).isin([(p.order, p.pixel) for p in keep])
        frames.append(old[kept])
    for r in results:
        frames.append(pd.DataFrame({"targetid": r["targetid"], "norder": np.int8(r["norder"]),
                                    "npix": np.int64(r["npix"]), "row": np.arange(len(r["targetid"]), dtype=np.int64)}))
    index = pd.concat(frames, ignore_index=True).sort_values("targetid", ignore_index=True)
    table = pa.Table.from_pandas(index, preserve_index=False)
    table = table.set_column(0, pa.field("targetid", targetid_type), table.column(0).cast(targetid_type))
    write_parquet_atomic(table, version / ID_INDEX, row_group_size=65_536)


def _write_hats_metadata(version: Path, pixels: list[HealpixPixel], hist: pd.DataFrame, sources: pd.Series) -> None:
    """The HATS metadata, with hats' own writers: ``_metadata`` / ``_common_metadata``,
    ``partition_info.csv``, the skymap and ``properties`` (``sources``: per partition)."""
    hats.io.write_parquet_metadata(version)
    PartitionInfo.from_healpix(pixels).write_to_file(catalog_path=version)
    skymap = np.bincount(hist["pixel"].to_numpy() >> 2 * (HIGHEST_ORDER - SKYMAP_ORDER),
                         weights=hist["count"].to_numpy(), minlength=12 * 4**SKYMAP_ORDER).astype(np.int64)
    write_skymap(skymap, version)
    properties: dict[str, Any] = {
        "catalog_name": "spxdask_lightcurves", "catalog_type": "object", "total_rows": int(sources.sum()),
        "ra_column": "ra", "dec_column": "dec", "healpix_column": HEALPIX_29, "healpix_order": 29,
        "skymap_order": SKYMAP_ORDER, "hats_max_rows": int(sources.max()),
        "hats_order": max((p.order for p in pixels), default=0),
        "moc_sky_fraction": PartitionInfo.from_healpix(pixels).calculate_fractional_coverage(),
        "hats_builder": f"spxdask v{__version__}"}
    TableProperties(**properties).to_properties_file(version)


def _swap(catalog_dir: Path, version: Path) -> None:
    """Point ``catalog_dir`` at ``version`` in one atomic rename of a new link."""
    link = catalog_dir.with_name(f".{catalog_dir.name}.link-{uuid.uuid4().hex[:8]}")
    link.symlink_to(os.path.relpath(version, catalog_dir.parent), target_is_directory=True)
    if catalog_dir.exists() and not catalog_dir.is_symlink():
        shutil.rmtree(catalog_dir)  # a catalog of an earlier layout
    os.replace(link, catalog_dir)


def spectra_inputs(config: SpectraConfig) -> list[str]:
    """The light-curve columns the spectra of ``config`` (its flux column resolved) read."""
    return [*INPUT_COLUMNS, config.flux_column, f"{config.flux_column}_error"]


def chosen_flux(config: SpectraConfig, files: Sequence[Path]) -> SpectraConfig:
    """``config`` with its flux column resolved for the whole run (``"auto"``: the PSF flux
    when any measurement has one, read from the footers' null counts), so that every
    partition takes the same one."""
    names = pq.read_schema(files[0]).names
    measured = "flux_psf" in names and any(_has_values(f, "flux_psf") for f in files)
    if config.flux_column == "flux_psf" and not measured:
        raise ValueError("SpectraConfig.flux_column: the run has no 'flux_psf' values (measured with "
                         "PhotometryConfig.psf_fit=False); take 'auto' or 'flux_total'")
    return replace(config, flux_column=config.resolve_flux(names, measured)[0])


def _has_values(path: Path, column: str) -> bool:
    """Whether a Parquet file's ``column`` holds a non-null value (footer statistics, or the
    column itself when a row group has none)."""
    meta = pq.read_metadata(path)
    index = meta.schema.names.index(column)
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(index).statistics
        if stats is None or not stats.has_null_count:
            values = pq.read_table(path, columns=[column]).column(0)
            return values.null_count < len(values)
        if stats.null_count < meta.row_group(rg).num_rows:
            return True
    return False
