"""The spectra stage: one Dask task per light-curve store partition, no shuffle.

The light-curve store is partitioned by targetid range, so every source's rows sit in one
partition file: each ``spectra-<i>`` task reads one file, computes its sources' channel spectra
and summaries (:func:`~spxdask.spectra.kernel.spectra_of`) and writes them. Outputs:

``<output_dir>/spectra/``
    a :mod:`spxdask.store` (``part.<i>.parquet`` sorted by targetid then channel wavelength,
    ``_targetid_index.parquet``) with :data:`~spxdask.spectra.binning.SPECTRUM_COLUMNS`,
    units in the Parquet metadata, and ``_provenance.json``;
``<output_dir>/sources.parquet``
    one row per source of the light-curve store (:data:`~spxdask.spectra.kernel.SOURCE_COLUMNS`).

Both are built under temporary names and renamed into place. Both record what they were made
from (the per-image files the light-curve store was built from, and the config): a rerun on
the same inputs and config reuses them, new inputs or a changed config recompute them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import dask
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from .._io import atomic_path
from ..cluster import compute
from ..store import PROVENANCE, parts, read_targets, swap_in, temporary_beside, write_index
from .binning import SPECTRUM_COLUMNS, UNITS
from .config import SpectraConfig
from .kernel import INPUT_COLUMNS, SOURCE_COLUMNS, spectra_of

ROW_GROUP_ROWS = 32_768
SORT_KEYS = ["targetid", "wavelength"]


def _schema(kind: str, targetid_type: pa.DataType, provenance: str) -> pa.Schema:
    types = {"targetid": targetid_type, "detector": pa.int8(), "channel": pa.int8(), "n_obs": pa.int32(),
             "n_used": pa.int32(), "n_channels": pa.int16(), "dof": pa.int32(), "variable": pa.bool_()}
    columns = SPECTRUM_COLUMNS if kind == "spectra" else SOURCE_COLUMNS
    units = UNITS if kind == "spectra" else {"ra": "deg", "dec": "deg"}
    fields = [pa.field(c, types.get(c, pa.float64()), metadata={"unit": units[c]} if c in units else None)
              for c in columns]
    return pa.schema(fields, metadata={"spxdask.units": json.dumps(units), "spxdask.provenance": provenance})


def _partition(source: str, spectra_out: str, sources_out: str, config: SpectraConfig, provenance: str) -> dict:
    """Spectra and summaries of one light-curve partition file, written as Parquet."""
    schema = pq.read_schema(source)
    flux, error = config.resolve_flux(schema.names)
    rows = pq.read_table(source, columns=[*INPUT_COLUMNS, flux, error]).to_pandas()
    spectra, sources = spectra_of(rows, config)
    tid = schema.field("targetid").type
    pq.write_table(pa.Table.from_pandas(spectra, schema=_schema("spectra", tid, provenance), preserve_index=False),
                   spectra_out, row_group_size=ROW_GROUP_ROWS)
    pq.write_table(pa.Table.from_pandas(sources, schema=_schema("sources", tid, provenance), preserve_index=False),
                   sources_out)
    return {"rows": len(spectra), "sources": len(sources), "variable": int(sources["variable"].sum())}


def provenance(lightcurve_dir: Path, config: SpectraConfig) -> str:
    """What a spectra build is made from, as JSON: what the light-curve store records it was
    built from (its per-image files and their fingerprints), the config and the package
    version."""
    recorded = lightcurve_dir / PROVENANCE
    store = json.loads(recorded.read_text()) if recorded.exists() else None
    return json.dumps({"lightcurves": store, "config": config.to_dict(), "spxdask": __version__}, sort_keys=True)


def is_current(output_dir: str | Path, config: SpectraConfig) -> bool:
    """Whether the spectra and ``sources.parquet`` of ``output_dir`` were made from its
    current light-curve store with ``config``."""
    output_dir = Path(output_dir)
    spectra, sources = output_dir / "spectra", output_dir / "sources.parquet"
    if not ((spectra / PROVENANCE).exists() and sources.exists() and (output_dir / "lightcurves").exists()):
        return False
    want = provenance(output_dir / "lightcurves", config)
    made = pq.read_schema(sources).metadata or {}
    return (spectra / PROVENANCE).read_text() == want and made.get(b"spxdask.provenance", b"").decode() == want


def build_spectra(output_dir: str | Path, config: SpectraConfig | None = None, *, client=None) -> dict:
    """Channel spectra and per-source summaries of a batch run's light-curve store.

    Parameters
    ----------
    output_dir : path
        The batch run folder; reads ``lightcurves/``, writes ``spectra/`` and ``sources.parquet``.
    config : SpectraConfig, optional
    client : distributed.Client, optional
        Where the tasks run (default: the running Client, else local threads).

    Returns
    -------
    dict
        ``rows`` (spectrum rows), ``sources``, ``variable`` (sources flagged) and
        ``reused`` (True when the outputs were current and nothing was computed).
    """
    config = config or SpectraConfig()
    output_dir = Path(output_dir).resolve()
    store = output_dir / "lightcurves"
    files = parts(store)
    if not files:
        raise FileNotFoundError(f"no light-curve store in {store}: run the aggregate stage first")
    final = output_dir / "spectra"
    sources_path = output_dir / "sources.parquet"
    if is_current(output_dir, config):
        summary = pd.read_parquet(sources_path, columns=["n_channels", "variable"])
        return {"rows": int(summary["n_channels"].sum()), "sources": len(summary),
                "variable": int(summary["variable"].sum()), "reused": True}
    chosen = _chosen_flux(config, files)  # a flux choice the store lacks fails here, before any task
    made_from = provenance(store, config)
    tmp = temporary_beside(final)
    (tmp / "sources").mkdir(parents=True)
    try:
        tasks = [dask.delayed(_partition, pure=False)(str(f), str(tmp / f.name), str(tmp / "sources" / f.name), chosen,
                                                      made_from, dask_key_name=f"spectra-{f.stem.split('.')[1]}")
                 for f in files]
        counts = compute(*tasks, client=client)
        with atomic_path(sources_path) as out:
            _concatenate(parts(tmp / "sources"), out)
        shutil.rmtree(tmp / "sources")
        write_index(tmp)
        (tmp / PROVENANCE).write_text(made_from)
        swap_in(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": sum(c["rows"] for c in counts), "sources": sum(c["sources"] for c in counts),
            "variable": sum(c["variable"] for c in counts), "reused": False}


def _chosen_flux(config: SpectraConfig, files: Sequence[Path]) -> SpectraConfig:
    """``config`` with its flux column resolved for the whole store (``"auto"``: the PSF flux
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
        chunk = meta.row_group(rg).column(index)
        stats = chunk.statistics
        if stats is None or not stats.has_null_count:
            values = pq.read_table(path, columns=[column]).column(0)
            return values.null_count < len(values)
        if stats.null_count < meta.row_group(rg).num_rows:
            return True
    return False


def _concatenate(files: Sequence[Path], out: Path) -> None:
    """Stream Parquet files of one schema into one file, a row group at a time."""
    schema = pq.read_schema(files[0])
    with pq.ParquetWriter(out, schema) as writer:
        for path in files:
            f = pq.ParquetFile(path)
            for rg in range(f.num_row_groups):
                writer.write_table(f.read_row_group(rg))


def read_spectra(output_dir: str | Path, targetids: Sequence) -> pd.DataFrame:
    """Channel spectra of the given targets, sorted by targetid then wavelength, reading only
    the row groups whose targetid range can hold them."""
    return read_targets(Path(output_dir) / "spectra", targetids, SORT_KEYS, what="spectra", stage="spectra")


def read_spectrum(output_dir: str | Path, targetid) -> pd.DataFrame:
    """One target's channel spectrum (:data:`~spxdask.spectra.binning.SPECTRUM_COLUMNS`, one
    row per channel with measurements, by wavelength; empty when it has none)."""
    return read_spectra(output_dir, [targetid])
