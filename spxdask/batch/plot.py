"""Plots of one source as PNG: its light curve (flux vs MJD, coloured by wavelength) and its
spectrum (channel points with error bars, coloured by detector, over the raw measurements in
grey). Drawn on ``matplotlib.figure.Figure`` objects: no pyplot, no backend switch, nothing
changed in the user's matplotlib state."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .._io import save_figure
from ..spectra import SpectraConfig, spectra_of
from ..spectra.compute import resolve


def _axes():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    return fig, fig.add_subplot()


def _title(rows: pd.DataFrame) -> str:
    return f"targetid {rows['targetid'].iloc[0]}" if len(rows) else ""


def _flux_column(rows: pd.DataFrame, column: str | None) -> str:
    return column or resolve(rows, SpectraConfig())[0]


def plot_lightcurve(rows: pd.DataFrame, path: str | Path, column: str | None = None) -> Path:
    """Flux vs MJD coloured by wavelength; ``rows`` are one source's light-curve rows and
    ``column`` the flux shown (default: the one the spectra use, see
    :class:`~spxdask.spectra.SpectraConfig`)."""
    column = _flux_column(rows, column)
    fig, ax = _axes()
    ax.errorbar(rows["mjd"], rows[column], yerr=rows[f"{column}_error"], fmt="none", ecolor="0.6", elinewidth=0.8,
                zorder=1)
    points = ax.scatter(rows["mjd"], rows[column], c=rows["wavelength"], cmap="viridis", s=14, zorder=2)
    fig.colorbar(points, ax=ax, label="wavelength [µm]")
    ax.set(xlabel="MJD", ylabel=f"{column} [µJy]", title=_title(rows))
    return save_figure(fig, path, dpi=110)


def plot_spectrum(rows: pd.DataFrame, path: str | Path, column: str | None = None, *,
                  spectrum: pd.DataFrame | None = None, log_wavelength: bool = False) -> Path:
    """A source's channel spectrum over its raw measurements.

    Parameters
    ----------
    rows : DataFrame
        The source's light-curve rows (drawn in grey).
    path : path
        The PNG to write.
    column : str, optional
        The flux of the raw points (default: the one the spectra use).
    spectrum : DataFrame, optional
        Its channel spectrum (:func:`~spxdask.batch.read_spectrum`); computed from ``rows``
        with the default :class:`~spxdask.spectra.SpectraConfig` when not given.
    log_wavelength : bool
        Logarithmic wavelength axis.
    """
    column = _flux_column(rows, column)
    if spectrum is None:
        spectrum = spectra_of(rows)[0] if len(rows) else pd.DataFrame(columns=["detector"])
    fig, ax = _axes()
    ax.errorbar(rows["wavelength"], rows[column], yerr=rows[f"{column}_error"], fmt=".", color="0.7",
                ecolor="0.8", elinewidth=0.6, markersize=3, zorder=1, label="measurements")
    for det in sorted(spectrum["detector"].unique()):
        chans = spectrum[spectrum["detector"] == det]
        ax.errorbar(chans["wavelength"], chans["flux"], yerr=chans["flux_error"], fmt="o", markersize=4,
                    elinewidth=1.0, capsize=2, color=f"C{int(det) - 1}", zorder=2, label=f"D{int(det)}")
    if log_wavelength:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_xticks([0.75, 1, 1.5, 2, 3, 4, 5])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small", ncols=2)
    ax.set(xlabel="wavelength [µm]", ylabel="flux [µJy]", title=_title(rows))
    return save_figure(fig, path, dpi=110)
