"""Variability against a smooth spectrum (numpy / scipy only).

SPHEREx measures each channel of a source at its own epoch, so a source that changed looks
like a source with a coloured spectrum unless both are modelled. The test fits every source's
good measurements with one smooth spectrum — a cubic B-spline in ln(λ) with fixed knots
(``knot_spacing``), by weighted least squares — and asks whether the measurements scatter about
it more than their errors allow. A constant source of any smooth colour fits; a source that
changed between the epochs at which one channel was re-measured, or at which neighbouring
channels were measured, does not, because a spline with a knot every few channels cannot bend
between neighbouring channels. The χ² has ``n - rank`` degrees of freedom (rank: the basis
functions the source's wavelengths constrain), and its p-value is the test.

All sources are fitted at once: the per-source normal matrices are accumulated with
``bincount`` from the sparse B-spline design matrix (``scipy.interpolate.BSpline``, four
non-zeros per row), Jacobi-scaled and solved by batched eigen-decomposition (a pseudo-inverse,
so sources with few measurements get the rank their data support).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline
from scipy.stats import chi2 as chi2_distribution

#: ln(λ / µm) range the spline spans: every SPHEREx detector (0.735–5.02 µm) with margin.
LN_WAVELENGTH_RANGE = (float(np.log(0.70)), float(np.log(5.10)))
DEGREE = 3
_RANK_TOL = 1e-10


def knots(knot_spacing: float) -> np.ndarray:
    """Uniform knots in ln(λ) covering :data:`LN_WAVELENGTH_RANGE` for a cubic B-spline."""
    lo, hi = LN_WAVELENGTH_RANGE
    n = int(np.ceil((hi - lo) / knot_spacing))
    return lo + knot_spacing * np.arange(-DEGREE, n + DEGREE + 1)


def smooth_fit(source: np.ndarray, n_sources: int, wavelength: np.ndarray, flux: np.ndarray, error: np.ndarray,
               *, knot_spacing: float, chunk: int = 4096, return_model: bool = False) -> tuple[np.ndarray, ...]:
    """χ² of each source's measurements about its weighted least-squares smooth spectrum.

    Parameters
    ----------
    source : int array
        Index (0 .. n_sources-1) of each measurement's source.
    wavelength, flux, error : float arrays
        Per measurement (µm, µJy, µJy); errors finite and positive.
    knot_spacing : float
        Knot spacing of the spline in ln(λ).
    chunk : int
        Sources fitted together (bounds memory: ``chunk`` normal matrices at a time).
    return_model : bool
        Also return the fitted smooth spectrum at each measurement.

    Returns
    -------
    chi2, dof[, model]
        Per source χ² and degrees of freedom (measurements − rank of the fit); per
        measurement its source's smooth spectrum at its wavelength (µJy) when asked.
    """
    source = np.asarray(source, np.int64)
    t = knots(knot_spacing)
    n_basis = t.size - DEGREE - 1
    x = np.clip(np.log(np.asarray(wavelength, float)), *LN_WAVELENGTH_RANGE)
    design = BSpline.design_matrix(x, t, DEGREE)
    cols = design.indices.reshape(-1, DEGREE + 1)
    vals = design.data.reshape(-1, DEGREE + 1)
    w = 1.0 / np.asarray(error, float) ** 2
    f = np.asarray(flux, float)
    chi2 = np.zeros(n_sources)
    rank = np.zeros(n_sources, np.int64)
    models = np.full(f.size, np.nan)
    order = np.argsort(source, kind="stable")
    bounds = np.searchsorted(source[order], np.arange(0, n_sources + chunk, chunk))
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = order[a:b]
        first = k * chunk
        m = min(chunk, n_sources - first)
        if m <= 0:
            break
        s = source[rows] - first
        c, v, wr = cols[rows], vals[rows], w[rows]
        # normal matrices N[s] = Σ w b bᵀ and right-hand sides Σ w f b, from 4 non-zeros per row
        flat = (s[:, None, None] * n_basis + c[:, :, None]) * n_basis + c[:, None, :]
        normal = np.bincount(flat.ravel(), (wr[:, None, None] * v[:, :, None] * v[:, None, :]).ravel(),
                             m * n_basis * n_basis).reshape(m, n_basis, n_basis)
        rhs = np.bincount((s[:, None] * n_basis + c).ravel(), (wr * f[rows])[:, None].repeat(DEGREE + 1, 1).ravel()
                          * v.ravel(), m * n_basis).reshape(m, n_basis)
        diag = np.einsum("sii->si", normal)
        scale = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 0.0)
        scaled = normal * scale[:, :, None] * scale[:, None, :]
        evals, evecs = np.linalg.eigh(scaled)
        keep = evals > _RANK_TOL * np.maximum(evals[:, -1:], np.finfo(float).tiny)
        inv = np.where(keep, 1.0 / np.where(keep, evals, 1.0), 0.0)
        proj = np.einsum("sji,sj->si", evecs, rhs * scale) * inv
        coef = np.einsum("sij,sj->si", evecs, proj) * scale
        model = np.einsum("ra,ra->r", v, coef[s[:, None], c])
        models[rows] = model
        chi2[first:first + m] = np.bincount(s, wr * (f[rows] - model) ** 2, m)
        rank[first:first + m] = keep.sum(axis=1)
    counts = np.bincount(source, minlength=n_sources)
    return (chi2, counts - rank, models) if return_model else (chi2, counts - rank)


def p_value(chi2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Survival function of χ² with ``dof`` degrees of freedom (NaN where dof ≤ 0)."""
    dof = np.asarray(dof)
    with np.errstate(invalid="ignore"):
        return np.where(dof > 0, chi2_distribution.sf(chi2, np.maximum(dof, 1)), np.nan)
