"""The spectral (z) axis: native, constant-R oversampled or custom bins, and top-hat overlaps
of each input pixel's passband with the bins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spherex.channels import channel_table

C_M_PER_S = 299_792_458.0


@dataclass(frozen=True)
class ZGrid:
    """Spectral bins (µm).

    Parameters
    ----------
    edges : ndarray
        n_z + 1 edges.
    centers, widths : ndarray
        n_z each.
    """

    edges: np.ndarray
    centers: np.ndarray
    widths: np.ndarray

    @classmethod
    def from_edges(cls, edges: np.ndarray) -> ZGrid:
        edges = np.asarray(edges, float)
        return cls(edges, 0.5 * (edges[1:] + edges[:-1]), np.maximum(np.diff(edges), 1e-6))

    @property
    def n_z(self) -> int:
        return self.centers.size

    def frequencies(self) -> np.ndarray:
        """Bin-centre frequencies (Hz)."""
        return C_M_PER_S / (self.centers * 1e-6)

    def delta_nu(self) -> np.ndarray:
        """Bin widths in frequency (Hz)."""
        return C_M_PER_S / (self.edges[:-1] * 1e-6) - C_M_PER_S / (self.edges[1:] * 1e-6)

    def resolving_power(self) -> np.ndarray:
        return self.centers / self.widths


def detector_spectral_table(detector: int):
    """The 17 channels of one detector, sorted by wavelength."""
    t = channel_table()
    return t[t["detector"] == detector].sort_values("wavelength", ignore_index=True)


def build_z_grid_native(detector: int) -> ZGrid:
    """The 17 native channels: edges are the WL_MIN of each channel plus the last WL_MAX
    (adjacent channels overlap in the table; each is cut at the next one's WL_MIN).

    Parameters
    ----------
    detector : int

    Returns
    -------
    ZGrid
    """
    t = detector_spectral_table(detector)
    return ZGrid.from_edges(np.append(t["wl_min"].to_numpy(float), t["wl_max"].iloc[-1]))


def build_z_grid_oversampled(detector: int, z_oversample: float) -> ZGrid:
    """Constant resolving power R_eff = mean(R) x ``z_oversample``: edges grow by
    (1 + 1/R_eff) from the first WL_MIN until past the last WL_MAX.

    Parameters
    ----------
    detector : int
    z_oversample : float

    Returns
    -------
    ZGrid
    """
    t = detector_spectral_table(detector)
    r_eff = float(t["r"].mean()) * z_oversample
    lo, hi = float(t["wl_min"].iloc[0]), float(t["wl_max"].iloc[-1])
    n = int(np.ceil(np.log(hi / lo) / np.log1p(1 / r_eff)))
    return ZGrid.from_edges(lo * (1 + 1 / r_eff) ** np.arange(n + 1))


def build_z_grid_custom(lambda_edges: np.ndarray) -> ZGrid:
    """Bins from user edges.

    Parameters
    ----------
    lambda_edges : ndarray
        µm, strictly increasing, at least two.

    Returns
    -------
    ZGrid
    """
    edges = np.asarray(lambda_edges, float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("z_lambda_edges must be >= 2 strictly increasing values (micron)")
    return ZGrid.from_edges(edges)


def z_grid_for(detector: int, z_oversample: float = 1.0, lambda_edges: np.ndarray | None = None) -> ZGrid:
    if lambda_edges is not None:
        return build_z_grid_custom(lambda_edges)
    if z_oversample == 1.0:
        return build_z_grid_native(detector)
    return build_z_grid_oversampled(detector, z_oversample)


def spectral_overlaps(lam: np.ndarray, dlam: np.ndarray, z_shrink: float, edges: np.ndarray,
                      max_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-hat overlaps of passbands [lam -/+ dlam z_shrink / 2] with the bins.

    Returns ``(z_index, fraction)``, each (n, k): the k bins each passband can touch (from
    the first it reaches), and the fraction of the passband in each (0 where it misses; a
    passband partly outside the grid keeps only its inside fractions). Bins a passband does
    not reach are never listed.
    """
    half = 0.5 * dlam * z_shrink
    lo, hi = lam - half, lam + half
    first = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, edges.size - 2)
    last = np.clip(np.searchsorted(edges, hi, side="left") - 1, 0, edges.size - 2)
    k = max_bins or int(max(1, (last - first).max(initial=0) + 1))
    z = first[:, None] + np.arange(k)[None, :]
    zc = np.minimum(z, edges.size - 2)
    overlap = np.clip(np.minimum(hi[:, None], edges[zc + 1]) - np.maximum(lo[:, None], edges[zc]), 0, None)
    frac = np.where(z <= last[:, None], overlap / (2 * half)[:, None], 0.0)
    return zc, frac
