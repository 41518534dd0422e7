"""Which catalog sources fall in which image: one spatial index of the catalog on the client,
queried once per image footprint (no projection of the whole catalog through every WCS)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])


class CatalogIndex:
    """A k-d tree over the catalog's unit vectors.

    Parameters
    ----------
    catalog : DataFrame
        Columns targetid, ra, dec (degrees).
    """

    def __init__(self, catalog: pd.DataFrame):
        self.catalog = catalog.reset_index(drop=True)
        self._xyz = _unit_vectors(self.catalog["ra"].to_numpy(float), self.catalog["dec"].to_numpy(float))
        self._tree = cKDTree(self._xyz)

    def in_polygon(self, corners: np.ndarray, margin_deg: float = 0.0) -> pd.DataFrame:
        """Catalog rows inside the spherical polygon with great-circle edges through
        ``corners`` ((k, 2) ra, dec degrees, convex), grown by ``margin_deg``."""
        v = _unit_vectors(corners[:, 0], corners[:, 1])
        centre = v.mean(axis=0)
        centre /= np.linalg.norm(centre)
        radius = np.max(np.linalg.norm(v - centre, axis=1)) + np.radians(margin_deg) * 1.01
        idx = np.asarray(self._tree.query_ball_point(centre, radius), dtype=int)
        if idx.size == 0:
            return self.catalog.iloc[:0]
        p = self._xyz[idx]
        # inside a convex great-circle polygon: on the same side of every edge's plane as the centre
        normals = np.cross(v, np.roll(v, -1, axis=0))
        normals *= np.sign(normals @ centre)[:, None]
        normals /= np.linalg.norm(normals, axis=1)[:, None]
        inside = np.all(p @ normals.T >= -np.sin(np.radians(margin_deg)), axis=1)
        return self.catalog.iloc[np.sort(idx[inside])]
