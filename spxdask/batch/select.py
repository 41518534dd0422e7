"""Which targets (the input list) fall in which image: one spatial index of the targets,
queried once per image footprint (no projection of the whole list through every WCS)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..geometry import contains_points, polygons, unit_vectors


class TargetIndex:
    """A k-d tree over the targets' unit vectors.

    Parameters
    ----------
    rows : DataFrame
        Columns ra, dec (degrees), and targetid for targets.
    """

    def __init__(self, rows: pd.DataFrame):
        self.rows = rows.reset_index(drop=True)
        self._xyz = unit_vectors(self.rows["ra"].to_numpy(float), self.rows["dec"].to_numpy(float))
        self._tree = cKDTree(self._xyz)

    def in_polygon(self, corners: np.ndarray, margin_deg: float = 0.0) -> np.ndarray:
        """Positions (sorted, in ``self.rows``) of the rows inside the convex spherical polygon
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
