"""The readers of the run's catalog: a few sources, fast.

The id index (sorted by targetid, its row groups' statistics skip all but one) names each
source's partition and row; one row group of that partition is read (pyarrow, no Dask). Every
reader takes the catalog folder, as ``lsdb.open_catalog`` does, or the run folder that holds
it (:func:`spxdask.layout.catalog_folder`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hats.pixel_math import HealpixPixel

from .. import per_image
from ..layout import catalog_folder
from ..spectra.binning import UNITS as SPECTRUM_UNITS
from .nested import LIGHTCURVE, SORT_KEYS, SOURCES_PER_ROW_GROUP, SPECTRUM, flatten, keys
from .versions import ID_INDEX, current_version, partition_files, partition_path


def _ids(index_path: Path, targetids: Sequence) -> list:
    """``targetids`` as the catalog's targetid type (integers stay integers, never floats)."""
    kind = pq.read_schema(index_path).field("targetid").type
    ids = list(targetids)
    if pa.types.is_integer(kind):
        try:
            return [int(t) for t in ids]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"targetids in {index_path.parent} are integers; got {ids!r}") from exc
    return [str(t) for t in ids]


def read_nested(catalog: str | Path, targetids: Sequence, column: str) -> pd.DataFrame:
    """The rows of nested ``column`` of the given sources, in stored order.

    Parameters
    ----------
    catalog : path
        The catalog folder, or the run folder that holds it.
    targetids : sequence
        The sources (their type is the catalog's: integers stay integers).
    column : {"lightcurve", "spectrum"}
        The nested column (the light curves: targetid, ra, dec and the per-image columns).

    Returns
    -------
    DataFrame

    Raises
    ------
    FileNotFoundError
        When there is no catalog yet.
    """
    folder = catalog_folder(catalog)
    version = current_version(folder)
    if version is None:
        raise FileNotFoundError(f"no catalog in {folder}: run the batch pipeline (its catalog stage) first")
    ids = _ids(version / ID_INDEX, targetids)
    where = pq.read_table(version / ID_INDEX, filters=[("targetid", "in", ids)]) if ids else None
    frames = []
    if where is not None and where.num_rows:
        located = where.to_pandas()
        for (order, npix), rows in located.groupby(["norder", "npix"]):
            part = pq.ParquetFile(partition_path(version, HealpixPixel(int(order), int(npix))))
            groups = sorted(set((rows["row"] // SOURCES_PER_ROW_GROUP).tolist()))
            table = part.read_row_groups(groups, columns=[*keys(column), column])
            frames.append(flatten(table.filter(pc.is_in(table["targetid"], value_set=pa.array(ids))), column))
    if frames:
        return pd.concat(frames, ignore_index=True)
    schema = pq.read_schema(partition_files(version)[0])
    return flatten(schema.empty_table().select([*keys(column), column]), column)


def read_lightcurves(catalog: str | Path, targetids: Sequence) -> pd.DataFrame:
    """The light-curve rows of the given targets: one row group of one partition per target.

    Parameters
    ----------
    catalog : path
        The catalog folder (``lightcurve_dir`` of :func:`~spxdask.batch.aggregate_lightcurves`),
        or the run folder that holds it.
    targetids : sequence
        The targets.

    Returns
    -------
    DataFrame
        Sorted by (targetid, mjd, wavelength); the per-image file's columns
        (:mod:`spxdask.per_image`), their units in ``attrs["units"]`` (fluxes in µJy: take
        ``flux_psf`` or ``flux_total``; ``flux`` is the reference's raw aperture flux).
    """
    rows = read_nested(catalog, targetids, LIGHTCURVE).sort_values(SORT_KEYS, kind="stable", ignore_index=True)
    rows.attrs["units"] = {c: u for c, u in per_image.UNITS.items() if c in rows}
    return rows


def read_lightcurve(catalog: str | Path, targetid) -> pd.DataFrame:
    """One target's light-curve rows (reference name).

    Parameters
    ----------
    catalog : path
        The catalog folder, or the run folder that holds it.
    targetid : int or str
        The target.

    Returns
    -------
    DataFrame
        Sorted by mjd then wavelength; empty when it was never measured.
    """
    return read_lightcurves(catalog, [targetid])


def read_spectra(catalog: str | Path, targetids: Sequence) -> pd.DataFrame:
    """Channel spectra of the given targets.

    Parameters
    ----------
    catalog : path
        The catalog folder, or the run folder that holds it.
    targetids : sequence
        The targets.

    Returns
    -------
    DataFrame
        :data:`~spxdask.spectra.binning.SPECTRUM_COLUMNS`, sorted by targetid then wavelength;
        their units in ``attrs["units"]``.
    """
    rows = read_nested(catalog, targetids, SPECTRUM).sort_values(["targetid", "wavelength"], kind="stable",
                                                                 ignore_index=True)
    rows.attrs["units"] = {c: u for c, u in SPECTRUM_UNITS.items() if c in rows}
    return rows


def read_spectrum(catalog: str | Path, targetid) -> pd.DataFrame:
    """One target's channel spectrum.

    Parameters
    ----------
    catalog : path
        The catalog folder, or the run folder that holds it.
    targetid : int or str
        The target.

    Returns
    -------
    DataFrame
        One row per channel with measurements, by wavelength; empty when it has none.
    """
    return read_spectra(catalog, [targetid])
