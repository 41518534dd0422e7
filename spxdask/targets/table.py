"""Targets as the photometry tasks see them: the rows inside one image's footprint.

:class:`TargetTable` reads them from a HATS catalog: the leaf pixels the footprint's circle
touches (found with cdshealpix on the pixel list, no Dask graph), only the columns used, then
the rows inside the footprint. It is a small record (the catalog's folder and pixel list), so
every task gets it whole. :class:`MemoryTargets` answers the same question for rows already in
memory (a DataFrame or a list of sources given to the Python API), with a k-d tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

from .. import per_image
from ..geometry import contains_points, polygons, unit_vectors
from .check import checked
from .columns import CARRIED, Columns


def _circle(corners: np.ndarray, margin_deg: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The footprint's polygon (unit vectors), its centre and a radius (chord) holding it and
    ``margin_deg`` around it."""
    poly = polygons(np.asarray(corners, float)[None])
    centre = poly[0].sum(axis=0)
    centre /= np.linalg.norm(centre)
    return poly, centre, float(np.max(np.linalg.norm(poly[0] - centre, axis=1)) + 1.01 * np.radians(margin_deg))


def _inside(poly: np.ndarray, rows: pd.DataFrame, margin_deg: float) -> pd.DataFrame:
    """The ``rows`` inside the polygon or within ``margin_deg`` of it, in a fixed order (by
    targetid; neighbours by position), so the same rows always digest alike."""
    xyz = unit_vectors(rows["ra"].to_numpy(float), rows["dec"].to_numpy(float))
    keep = contains_points(poly, xyz, tolerance=np.sin(np.radians(margin_deg)))[0] if len(rows) else np.zeros(0, bool)
    order = ["targetid"] if "targetid" in rows else ["ra", "dec"]
    return rows[keep].sort_values(order, kind="stable", ignore_index=True)


class MemoryTargets:
    """Rows in memory, with a k-d tree over their unit vectors.

    Parameters
    ----------
    rows : DataFrame
        targetid (absent for neighbours), ra, dec (deg), and any carried columns.
    """

    def __init__(self, rows: pd.DataFrame):
        self.rows = rows.reset_index(drop=True)
        self._xyz = unit_vectors(self.rows["ra"].to_numpy(float), self.rows["dec"].to_numpy(float))
        self._tree = cKDTree(self._xyz)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def targetid_type(self) -> pa.DataType:
        """The Arrow type of the ids."""
        return per_image.targetid_type(self.rows)

    @property
    def carried(self) -> tuple[str, ...]:
        """The carried columns the rows have (:data:`~spxdask.targets.columns.CARRIED` names)."""
        return tuple(c for c in CARRIED if c in self.rows)

    def in_footprint(self, corners: np.ndarray, *, margin_deg: float = 0.0) -> pd.DataFrame:
        """The rows inside the convex spherical polygon through ``corners`` ((k, 2) ra, dec in
        degrees), or within ``margin_deg`` of it."""
        poly, centre, radius = _circle(corners, margin_deg)
        near = np.sort(np.asarray(self._tree.query_ball_point(centre, radius), dtype=int))
        return _inside(poly, self.rows.take(near), margin_deg)


@dataclass(frozen=True)
class TargetTable:
    """A HATS catalog read per footprint.

    Parameters
    ----------
    root : str
        The catalog's folder (a path or an fsspec URL).
    pixels : tuple of (order, pixel)
        Its leaf pixels.
    columns : Columns
        Its names of the id, ra, dec and carried columns.
    rows : int
        Its row count.
    id_kind : {"int64", "string"} or None
        The ids' type (None: a neighbour catalog, no ids).
    npix_suffix : str
        hats' leaf file suffix (``".parquet"``, or ``"/"`` for a folder per pixel).
    storage_options : dict, optional
        fsspec options for a remote catalog.
    """

    root: str
    pixels: tuple[tuple[int, int], ...] = field(repr=False)
    columns: Columns
    rows: int
    id_kind: str | None
    npix_suffix: str = ".parquet"
    storage_options: dict | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.rows

    @property
    def targetid_type(self) -> pa.DataType:
        """The Arrow type of the ids."""
        return pa.int64() if self.id_kind == "int64" else pa.string()

    @property
    def carried(self) -> tuple[str, ...]:
        """The carried columns the rows have (:data:`~spxdask.targets.columns.CARRIED` names)."""
        return tuple(c.lower() for c in self.columns.carried)

    def pixels_touched(self, corners: np.ndarray, *, margin_deg: float = 0.0) -> list[tuple[int, int]]:
        """The leaf pixels the circle around the footprint (and ``margin_deg``) touches."""
        import astropy.units as u
        from astropy.coordinates import Angle, Latitude, Longitude
        from cdshealpix.nested import cone_search

        _, centre, chord = _circle(corners, margin_deg)
        ra = np.degrees(np.arctan2(centre[1], centre[0])) % 360
        dec = np.degrees(np.arcsin(np.clip(centre[2], -1, 1)))
        radius = Angle(2 * np.arcsin(min(chord / 2, 1.0)), u.rad)
        leaves = set(self.pixels)
        touched = []
        for order in sorted({o for o, _ in self.pixels}):
            ipix = cone_search(Longitude(ra * u.deg), Latitude(dec * u.deg), radius, depth=order, flat=True)[0]
            touched += sorted((order, int(p)) for p in set(ipix.tolist()) if (order, int(p)) in leaves)
        return touched

    def in_footprint(self, corners: np.ndarray, *, margin_deg: float = 0.0) -> pd.DataFrame:
        """The rows inside the convex spherical polygon through ``corners`` ((k, 2) ra, dec in
        degrees), or within ``margin_deg`` of it: read from the pixels it touches only."""
        import fsspec
        from hats.io import paths
        from hats.pixel_math import HealpixPixel

        fs, base = fsspec.core.url_to_fs(self.root, **(self.storage_options or {}))
        frames = []
        for order, pixel in self.pixels_touched(corners, margin_deg=margin_deg):
            file = paths.pixel_catalog_file(base, HealpixPixel(order, pixel), npix_suffix=self.npix_suffix)
            table = pq.read_table(str(file), columns=self.columns.read(), filesystem=fs)
            frames.append(checked(table.to_pandas(), self.columns, where=str(file), first=0, unit="row(s)",
                                  kind=self.id_kind))
        if not frames:
            return self._empty()
        poly, _, _ = _circle(corners, margin_deg)
        return _inside(poly, pd.concat(frames, ignore_index=True), margin_deg)

    def _empty(self) -> pd.DataFrame:
        out = {} if self.id_kind is None else {"targetid": pd.Series([], dtype="int64" if self.id_kind == "int64"
                                                                      else "string")}
        return pd.DataFrame({**out, "ra": pd.Series([], dtype=float), "dec": pd.Series([], dtype=float),
                             **{c.lower(): pd.Series([], dtype=object) for c in self.columns.carried}})
