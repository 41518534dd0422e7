"""The per-image file: the contract between the photometry stage and the catalog stage.

The photometry stage writes one Parquet file per image, ``per_image/<obs_id>_D<n>.parquet``,
also when no source falls in the image; the catalog stage reads them. Neither side defines
the file: both use this module, which imports neither (as ``hats`` is to ``lsdb`` and
``hats-import``). It holds the columns with their Arrow type, unit and meaning in one table
(:data:`COLUMNS`), the schema, the metadata keys, the file name, the digest both stages'
fingerprints are made with, and the writer and readers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._io import write_parquet_atomic

__all__ = ["ASTROMETRY_KEY", "COLUMNS", "FINGERPRINT_KEY", "NAMES", "RUN_KEY", "UNITS", "UNITS_KEY", "Column", "digest",
           "empty_frame", "file_name", "footer", "read", "recorded", "recorded_fingerprint", "rows_digest", "schema",
           "targetid_type", "write"]

#: Metadata key of what made a file (:func:`digest` of its inputs).
FINGERPRINT_KEY = b"spxdask.fingerprint"
#: Metadata key of the run that wrote a file.
RUN_KEY = b"spxdask.run"
#: Metadata key of the column units (JSON).
UNITS_KEY = b"spxdask.units"
#: Metadata key of the image's astrometry record (JSON; :class:`spxdask.photometry.astrometry.Astrometry`).
ASTROMETRY_KEY = b"spxdask.astrometry"


@dataclass(frozen=True)
class Column:
    """One column of the per-image file.

    Parameters
    ----------
    name : str
        The column name (the reference's names are kept).
    type : pyarrow.DataType
        Its Arrow type; None for ``targetid``, whose type is the input list's (int64 or string).
    unit : str
        Its unit ("" when it has none).
    description : str
        What it holds.
    """

    name: str
    type: pa.DataType | None
    unit: str
    description: str


_F64, _STR = pa.float64(), pa.string()
#: The columns, in file order: the reference's, then spxdask's.
COLUMNS: tuple[Column, ...] = (
    Column("targetid", None, "", "the target's id, exactly as in the input list (int64 or string)"),
    Column("ra", _F64, "deg", "right ascension of the position measured"),
    Column("dec", _F64, "deg", "declination of the position measured"),
    Column("obs_id", _STR, "", "the image's observation id"),
    Column("band", _STR, "", "detector band, D1-D6"),
    Column("mjd", _F64, "d", "mid-exposure MJD (mean of MJD-BEG and MJD-END)"),
    Column("x", _F64, "pix", "0-based pixel column of the position"),
    Column("y", _F64, "pix", "0-based pixel row of the position"),
    Column("flux", _F64, "uJy", "aperture flux, background subtracted (the reference's; not aperture corrected)"),
    Column("flux_error", _F64, "uJy", "error of flux"),
    Column("mag_ab", _F64, "mag(AB)", "AB magnitude of flux"),
    Column("mag_ab_error", _F64, "mag", "error of mag_ab"),
    Column("wavelength", _F64, "um", "central wavelength at the position"),
    Column("bandwidth", _F64, "um", "bandwidth at the position"),
    Column("flag", pa.int32(), "", "FLAGS bits set inside the aperture (OR)"),
    Column("bg_level", _F64, "uJy/arcsec2", "local background"),
    Column("bg_error", _F64, "uJy/arcsec2", "error of bg_level"),
    Column("aperture_radius", _F64, "pix", "aperture radius"),
    Column("filename", _STR, "", "the L2 file's name"),
    Column("detector", pa.int8(), "", "detector number, 1-6"),
    Column("n_bad", pa.int16(), "", "masked pixels inside the aperture"),
    Column("aperture_correction", _F64, "", "total / aperture flux of the file's own PSF, masked pixels included"),
    Column("flux_total", _F64, "uJy", "flux times aperture_correction: the aperture's total flux"),
    Column("flux_total_error", _F64, "uJy", "error of flux_total"),
    Column("zodi_scale", _F64, "", "fitted scale of the file's ZODI model"),
    Column("quality", _STR, "", "what went wrong for the aperture, comma-separated ('' when nothing)"),
    Column("flux_psf", _F64, "uJy", "flux of the joint fit with every source a point (the PSF)"),
    Column("flux_psf_error", _F64, "uJy", "error of flux_psf"),
    Column("mag_psf_ab", _F64, "mag(AB)", "AB magnitude of flux_psf"),
    Column("mag_psf_ab_error", _F64, "mag", "error of mag_psf_ab"),
    Column("psf_chi2", _F64, "", "reduced chi-square of the PSF fit over the source's pixels"),
    Column("psf_n_neighbours", pa.int32(), "", "sources fitted jointly within the fit radius"),
    Column("psf_corr_max", _F64, "", "largest |correlation| of the flux with a neighbour's"),
    Column("psf_quality", _STR, "", "what went wrong for the PSF fit, comma-separated"),
    Column("flux_model", _F64, "uJy", "total flux of the joint fit with each source's model (flux_psf for points): "
                                      "take this one"),
    Column("flux_model_error", _F64, "uJy", "error of flux_model"),
    Column("mag_model_ab", _F64, "mag(AB)", "AB magnitude of flux_model"),
    Column("mag_model_ab_error", _F64, "mag", "error of mag_model_ab"),
    Column("model", _STR, "", "the source's model: PSF, REX, EXP, DEV or SER (Tractor's types)"),
    Column("pipeline_version", _STR, "", "the file's pipeline VERSION"),
    Column("release", _STR, "", "the file's layout and calibration: qr2 or qr3"),
)
#: The column names, in file order.
NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
#: Unit of each column that has one.
UNITS: dict[str, str] = {c.name: c.unit for c in COLUMNS if c.unit}


def schema(targetid_type: pa.DataType, *, fingerprint: str = "", run: str = "",
           astrometry: dict | None = None) -> pa.Schema:
    """The Arrow schema of a per-image file.

    Parameters
    ----------
    targetid_type : pyarrow.DataType
        ``pa.int64()`` or ``pa.string()`` (:func:`targetid_type`).
    fingerprint : str
        What made the file (metadata key ``spxdask.fingerprint``).
    run : str
        The run that wrote it (metadata key ``spxdask.run``).
    astrometry : dict, optional
        The image's astrometry record (metadata key ``spxdask.astrometry``, JSON).

    Returns
    -------
    pyarrow.Schema
        Units in each field's metadata and, as JSON, under ``spxdask.units``.
    """
    fields = [pa.field(c.name, targetid_type if c.type is None else c.type,
                       metadata={"unit": c.unit} if c.unit else None) for c in COLUMNS]
    metadata = {UNITS_KEY: json.dumps(UNITS), FINGERPRINT_KEY: fingerprint, RUN_KEY: run}
    if astrometry is not None:
        metadata[ASTROMETRY_KEY] = json.dumps(astrometry)
    return pa.schema(fields, metadata=metadata)


def targetid_type(targets: pd.DataFrame) -> pa.DataType:
    """The Arrow type of ``targets["targetid"]``: int64 for integers, string otherwise (never float).

    Parameters
    ----------
    targets : DataFrame
        An input list with a ``targetid`` column.

    Returns
    -------
    pyarrow.DataType
        ``pa.int64()`` or ``pa.string()``.
    """
    return pa.int64() if pd.api.types.is_integer_dtype(targets["targetid"]) else pa.string()


def empty_frame(targetids: pd.Series) -> pd.DataFrame:
    """A frame of no rows with every column, typed as in the file.

    Parameters
    ----------
    targetids : Series
        Its first zero rows give the ``targetid`` column (keeping its dtype).

    Returns
    -------
    DataFrame
        No rows, every column.
    """
    frame = pd.DataFrame({c.name: pd.Series(dtype=object if c.type in (None, _STR) else c.type.to_pandas_dtype())
                          for c in COLUMNS})
    return frame.assign(targetid=targetids.iloc[:0].reset_index(drop=True))


def file_name(obs_id: str, detector: int) -> str:
    """``<obs_id>_D<n>.parquet``, with anything but ``[A-Za-z0-9_.-]`` in ``obs_id`` replaced.

    Parameters
    ----------
    obs_id : str
        The image's observation id.
    detector : int
        Its detector, 1-6.

    Returns
    -------
    str
        The file's name.
    """
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', obs_id).lstrip('.')}_D{int(detector)}.parquet"


def digest(made_from: dict[str, Any]) -> str:
    """The fingerprint of what something is made from: SHA-256 of its sorted JSON.

    Both stages' fingerprints are made with it: a per-image file's (image, rows, config) and a
    catalog partition's (its files and their fingerprints, the spectra config).

    Parameters
    ----------
    made_from : dict
        JSON-serialisable inputs (other values by their ``str``).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    return hashlib.sha256(json.dumps(made_from, sort_keys=True, default=str).encode()).hexdigest()


def rows_digest(frame: pd.DataFrame) -> str:
    """The digest of a frame's values, row by row (the index left out).

    Parameters
    ----------
    frame : DataFrame

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def write(rows: pd.DataFrame, path: str | Path, targetid_type: pa.DataType, *, fingerprint: str = "",
          run: str = "", astrometry: dict | None = None) -> None:
    """Write one image's rows, atomically, with :func:`schema`.

    Parameters
    ----------
    rows : DataFrame
        The photometry kernel's rows (columns :data:`NAMES`).
    path : path
        The file (:func:`file_name` in the run's ``per_image`` folder).
    targetid_type : pyarrow.DataType
    fingerprint, run : str
        What made it and the run that wrote it (see :func:`schema`).
    astrometry : dict, optional
        The image's astrometry record (see :func:`schema`).
    """
    if targetid_type == pa.string():
        rows = rows.assign(targetid=rows["targetid"].astype(str))
    rows = rows.copy(deep=False)
    rows.attrs = {}  # the kernel's records go to the metadata keys above, not to pandas' metadata
    table = pa.Table.from_pandas(rows, schema=schema(targetid_type, fingerprint=fingerprint, run=run,
                                                     astrometry=astrometry), preserve_index=False)
    write_parquet_atomic(table, Path(path))


def read(path: str | Path, *, columns: list[str] | None = None) -> pa.Table:
    """One per-image file, or some of its columns.

    Parameters
    ----------
    path : path
    columns : list of str, optional
        Default: every column.

    Returns
    -------
    pyarrow.Table
        The file's rows.
    """
    return pq.read_table(path, columns=columns)


def footer(path: str | Path) -> pq.FileMetaData | None:
    """A file's Parquet footer: its row count and, as metadata, what made it.

    Parameters
    ----------
    path : path

    Returns
    -------
    pyarrow.parquet.FileMetaData or None
        None for a missing or unreadable file.
    """
    try:
        return pq.read_metadata(path)
    except (OSError, pa.ArrowInvalid):
        return None


def recorded(meta: pq.FileMetaData | None, key: bytes) -> str | None:
    """A metadata value of a footer (None when the footer or the key is missing).

    Parameters
    ----------
    meta : pyarrow.parquet.FileMetaData or None
        From :func:`footer`.
    key : bytes
        :data:`FINGERPRINT_KEY`, :data:`RUN_KEY` or :data:`ASTROMETRY_KEY`.

    Returns
    -------
    str or None
        The value, or None.
    """
    if meta is None:
        return None
    return (meta.metadata or {}).get(key, b"").decode() or None


def recorded_fingerprint(path: str | Path) -> str | None:
    """The fingerprint a per-image file was written with.

    Parameters
    ----------
    path : path

    Returns
    -------
    str or None
        None for a missing file or one written without a fingerprint.
    """
    return recorded(footer(path), FINGERPRINT_KEY)
