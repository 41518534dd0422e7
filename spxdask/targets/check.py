"""The rows of an input catalog, checked piece by piece: ids exact, positions on the sky."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


class CatalogError(ValueError):
    """A catalog is unusable; the message names the file and the offending rows."""


def _rows(mask: np.ndarray, first: int, limit: int = 10) -> str:
    """Where ``mask`` holds, numbered from ``first``."""
    idx = (np.flatnonzero(mask) + first).tolist()
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(map(str, idx[:limit])) + more


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().fillna("")


def _int64(text: pd.Series) -> np.ndarray | None:
    """The ids as 64-bit integers, parsed exactly; None unless every one is such an integer."""
    try:
        return pa.array(text.to_numpy(object), pa.string()).cast(pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def id_kind(values: pd.Series) -> str:
    """``"int64"`` when every id is an integer that fits (a 64-bit id stays exact), else
    ``"string"`` (never float)."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return "int64"
    if pd.api.types.is_float_dtype(values.dtype):
        return "string"
    return "int64" if _int64(_text(values)) is not None else "string"


def checked(chunk: pd.DataFrame, columns, *, where: str, first: int, unit: str, kind: str | None) -> pd.DataFrame:
    """``chunk`` (the catalog's own columns) as targetid, ra, dec (deg) and the carried columns.

    Parameters
    ----------
    chunk : DataFrame
        Rows of the catalog, as read (text for a CSV).
    columns : Columns
        Which column is which (``columns.id`` None: no targetid, a neighbour catalog).
    where : str
        The file, for the messages.
    first : int
        The number of ``chunk``'s first row in the messages.
    unit : str
        ``"line(s)"`` or ``"row(s)"``.
    kind : {"int64", "string"} or None
        The id type (None: decided from this chunk, :func:`id_kind`).

    Raises
    ------
    CatalogError
        For empty, duplicate or (after an integer id) non-integer ids; non-numeric, NaN or
        out-of-range coordinates; naming the rows.
    """
    problems = []
    out = {}
    if columns.id is not None:
        raw = chunk[columns.id]
        kind = kind or id_kind(raw)
        if pd.api.types.is_integer_dtype(raw.dtype):  # numbers as such: nothing empty, nothing to parse
            ids, empty, number = raw, np.zeros(len(raw), bool), raw.to_numpy(np.int64)
        else:
            ids = _text(raw)
            empty = (ids == "").to_numpy()
            number = _int64(ids) if kind == "int64" else None
        if empty.any():
            problems.append(f"empty targetid on {unit} {_rows(empty, first)}")
        dup = ids.duplicated(keep=False).to_numpy() & ~empty
        if dup.any():
            problems.append(f"duplicate targetid on {unit} {_rows(dup, first)}")
        if kind == "int64" and number is None and not empty.any():
            odd = ~ids.str.fullmatch(r"[+-]?\d{1,18}").to_numpy(bool)
            problems.append(f"targetid not a 64-bit integer like those before it on {unit} {_rows(odd, first)}")
        out["targetid"] = number if kind == "int64" else ids.to_numpy(object)
    for name, col, lo, hi in (("ra", columns.ra, 0.0, 360.0), ("dec", columns.dec, -90.0, 90.0)):
        raw = chunk[col]
        if pd.api.types.is_numeric_dtype(raw.dtype):
            value, bad_text = pd.Series(raw.to_numpy(float)), np.zeros(len(raw), bool)
        else:
            text = _text(raw)
            value = pd.Series(pd.to_numeric(text, errors="coerce").to_numpy(float, na_value=np.nan))
            bad_text = (value.isna() & (text != "") & ~text.str.lower().isin(["nan", "null", "none"])).to_numpy(bool)
        if bad_text.any():
            problems.append(f"non-numeric {name} on {unit} {_rows(bad_text, first)}")
        missing = value.isna().to_numpy() & ~bad_text
        if missing.any():
            problems.append(f"missing/NaN {name} on {unit} {_rows(missing, first)}")
        outside = ((value < lo) | (value > hi)).to_numpy()
        if outside.any():
            problems.append(f"{name} outside [{lo:g}, {hi:g}] on {unit} {_rows(outside, first)}")
        out[name] = value.to_numpy(float)
    if problems:
        raise CatalogError(f"{where}: " + "; ".join(problems))
    frame = pd.DataFrame(out)
    if "targetid" in frame and kind == "string":
        frame["targetid"] = frame["targetid"].astype("string")
    for col in columns.carried:  # numbers when they all read as numbers (a CSV's text)
        values = chunk[col]
        if not pd.api.types.is_numeric_dtype(values.dtype):
            number = pd.Series(pd.to_numeric(_text(values), errors="coerce").to_numpy(float, na_value=np.nan))
            values = number if number.notna().sum() == (_text(values) != "").sum() else values
        frame[col.lower()] = values.to_numpy()
    return frame
