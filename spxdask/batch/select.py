"""Which catalog sources fall in which image: one spatial index of the catalog on the client,
queried once per image footprint (no projection of the whole catalog through every WCS)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..geometry import contains_points, polygons, unit_vectors


class CatalogIndex:
    """A k-d tree over the catalog's unit vectors.

    Parameters
    ----------
    catalog : DataFrame
        Columns targetid, ra, dec (degrees).
    """

    def __init__(self, catalog: pd.DataFrame):
        self.catalog = catalog.reset_index(drop=True)
        self._xyz = unit_vectors(self.catalog["ra"].to_numpy(float), self.catalog["dec"].to_numpy(float))
        self._tree = cKDTree(self._xyz)

    def in_polygon(self, corners: np.ndarray, margin_deg: float = 0.0) -> np.ndarray:
        """Positions (sorted, in ``self.catalog``) of the rows inside the convex spherical polygon
        through ``corners`` ((k, 2) ra, dec in degrees), or within ``margin_deg`` of it."""
        poly = polygons(np.asarray(corners)[None])
        centre = poly[0].sum(axis=0)
        centre /= np.linalg.norm(centre)
        radius = np.max(np.linalg.norm(poly[0] - centre, axis=1)) + 1.01 * np.radians(margin_deg)
        idx = np.asarray(self._tree.query_ball_point(centre, radius), dtype=int)
        if idx.size == 0:
            return idx
        inside = contains_points(poly, self._xyz[idx], tolerance=np.sin(np.radians(margin_deg)))[0]
        return np.sort(idx[inside])
