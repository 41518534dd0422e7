"""Sky geometry, pure numpy: gnomonic projections, and footprints as convex spherical polygons
(great-circle edges) with the INTERSECTS / CONTAINS semantics of ADQL, vectorised over many
polygons."""

from __future__ import annotations

import numpy as np


def grid_corners(wcs, shape: tuple[int, int]) -> np.ndarray:
    """(4, 2) ra, dec (deg) of the outer pixel-edge corners of a pixel grid of ``shape`` (ny, nx)
    through ``wcs`` (anything with astropy's ``all_pix2world``), in the order of IRSA's
    ``s_region``: (x, y) = (-0.5, -0.5), (nx - 0.5, -0.5), (nx - 0.5, ny - 0.5), (-0.5, ny - 0.5)."""
    ny, nx = shape
    ra, dec = wcs.all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
    return np.column_stack([ra, dec])


def tangent_to_sky(ra0: float, dec0: float, xi: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic de-projection: tangent-plane offsets (deg) about (ra0, dec0) to (ra, dec) deg."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    x, y = np.radians(xi), np.radians(eta)
    den = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, den)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def sky_to_tangent(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of (ra, dec) deg about (ra0, dec0): tangent-plane offsets in deg."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    a, d = np.radians(ra), np.radians(dec)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(..., 3) unit vectors of (ra, dec) in degrees."""
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _edge_normals(poly: np.ndarray) -> np.ndarray:
    """Inward unit normals (m, k, 3) of the edges of polygons given as vertices (m, k, 3)."""
    n = np.cross(poly, np.roll(poly, -1, axis=1))
    centre = poly.sum(axis=1, keepdims=True)
    n *= np.sign(np.sum(n * centre, axis=-1, keepdims=True))
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def polygons(corners: np.ndarray) -> np.ndarray:
    """(m, k, 3) vertex vectors from (m, k, 2) corners in degrees."""
    corners = np.asarray(corners, float)
    return unit_vectors(corners[..., 0], corners[..., 1])


def contains_points(poly: np.ndarray, points: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """(m, p) bool: point p inside convex polygon m (vertices (m, k, 3), points (p, 3)), or
    outside by less than ``tolerance`` (sine of the angle) from every edge's great circle."""
    normals = _edge_normals(poly)
    return np.all(np.matmul(points, normals.transpose(0, 2, 1)) >= -tolerance, axis=-1)


def _arc_distance(poly: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(m, k) angular distance (rad) from ``point`` (3,) to each edge arc of each polygon."""
    a, b = poly, np.roll(poly, -1, axis=1)
    n = np.cross(a, b)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    # the closest point of the great circle, and whether it lies between a and b
    proj = point - np.sum(point * n, axis=-1, keepdims=True) * n
    norm = np.linalg.norm(proj, axis=-1, keepdims=True)
    proj = np.divide(proj, norm, out=np.zeros_like(proj), where=norm > 0)
    on_arc = (np.sum(np.cross(a, proj) * n, axis=-1) >= 0) & (np.sum(np.cross(proj, b) * n, axis=-1) >= 0)
    to_circle = np.arcsin(np.clip(np.abs(np.sum(point * n, axis=-1)), 0, 1))
    to_a = np.arccos(np.clip(np.sum(a * point, axis=-1), -1, 1))
    to_b = np.arccos(np.clip(np.sum(b * point, axis=-1), -1, 1))
    return np.where(on_arc, to_circle, np.minimum(to_a, to_b))


def intersects_circle(poly: np.ndarray, ra: float, dec: float, radius: float) -> np.ndarray:
    """(m,) ``INTERSECTS(poly, CIRCLE(ra, dec, radius))``: they share at least one point."""
    centre = unit_vectors(np.array(ra), np.array(dec))
    inside = contains_points(poly, centre[None])[:, 0]
    return inside | np.any(_arc_distance(poly, centre) <= np.radians(radius), axis=1)


def circle_inside(poly: np.ndarray, ra: float, dec: float, radius: float) -> np.ndarray:
    """(m,) ``CONTAINS(CIRCLE(ra, dec, radius), poly)``: the circle lies inside the polygon."""
    centre = unit_vectors(np.array(ra), np.array(dec))
    inside = contains_points(poly, centre[None])[:, 0]
    return inside & np.all(_arc_distance(poly, centre) >= np.radians(radius), axis=1)


def _arcs_cross(a1, a2, b1, b2) -> np.ndarray:
    """Whether great-circle arcs a1-a2 and b1-b2 (broadcast (..., 3)) cross."""
    na, nb = np.cross(a1, a2), np.cross(b1, b2)
    x = np.cross(na, nb)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    hit = np.zeros(x.shape[:-1], bool)
    for p in (x, -x):
        on_a = (np.sum(np.cross(a1, p) * na, axis=-1) >= 0) & (np.sum(np.cross(p, a2) * na, axis=-1) >= 0)
        on_b = (np.sum(np.cross(b1, p) * nb, axis=-1) >= 0) & (np.sum(np.cross(p, b2) * nb, axis=-1) >= 0)
        hit |= on_a & on_b
    return hit & (norm[..., 0] > 0)


def intersects_polygon(poly: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(m,) ``INTERSECTS(poly, POLYGON(region))`` for a convex region (k, 3)."""
    region = np.asarray(region)
    corner_in_poly = np.any(contains_points(poly, region), axis=1)
    poly_in_region = np.any(contains_points(region[None], poly.reshape(-1, 3))[0].reshape(poly.shape[:2]), axis=1)
    a1, a2 = poly[:, :, None, :], np.roll(poly, -1, axis=1)[:, :, None, :]
    b1, b2 = region[None, None], np.roll(region, -1, axis=0)[None, None]
    crossing = np.any(_arcs_cross(a1, a2, b1, b2), axis=(1, 2))
    return corner_in_poly | poly_in_region | crossing
