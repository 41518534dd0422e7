"""Plots of one source: light curve (flux vs MJD, coloured by wavelength) and spectrum
(flux vs wavelength, coloured by epoch), with error bars, as PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(7, 4), constrained_layout=True)


def _scatter(ax, x, y, yerr, colour, label, cmap):
    ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor="0.6", elinewidth=0.8, zorder=1)
    points = ax.scatter(x, y, c=colour, cmap=cmap, s=14, zorder=2)
    ax.figure.colorbar(points, ax=ax, label=label)


def plot_lightcurve(rows: pd.DataFrame, path: str | Path, column: str = "flux") -> Path:
    """Flux vs MJD coloured by wavelength; ``rows`` are one source's light-curve rows."""
    plt, fig, ax = _figure()
    _scatter(ax, rows["mjd"], rows[column], rows[f"{column}_error"], rows["wavelength"], "wavelength [µm]", "viridis")
    ax.set(xlabel="MJD", ylabel=f"{column} [µJy]", title=f"targetid {rows['targetid'].iloc[0]}" if len(rows) else "")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_spectrum(rows: pd.DataFrame, path: str | Path, column: str = "flux") -> Path:
    """Flux vs wavelength coloured by epoch (MJD)."""
    plt, fig, ax = _figure()
    _scatter(ax, rows["wavelength"], rows[column], rows[f"{column}_error"], rows["mjd"], "MJD", "plasma")
    ax.set(xlabel="wavelength [µm]", ylabel=f"{column} [µJy]",
           title=f"targetid {rows['targetid'].iloc[0]}" if len(rows) else "")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
