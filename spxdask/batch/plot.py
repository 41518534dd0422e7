"""Figures of one source: its light curve and its spectrum.

``draw_*`` build a ``matplotlib.figure.Figure`` (to show in a notebook or place in a page),
``plot_*`` write it as PNG. No pyplot, no backend switch: nothing changes in the user's
matplotlib state. Titles say where the source is and what the variability test found; error
bars are drawn over the points, so they never hide under them.

A light curve mixes every wavelength: the source's spectrum alone spreads its fluxes, which
hides any variation. Three views:

``"wavelength"``
    flux against MJD, coloured by wavelength (the spread is the spectrum);
``"detector"``
    one panel per detector (each covers a sixth of the wavelengths);
``"normalised"``
    each flux divided by the smooth spectrum the variability test fits to the source (a
    spline in ln λ, :mod:`spxdask.spectra.variability`): a constant source scatters about 1
    within its errors, a variable one does not; the scatter is the test's χ².
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import save_figure
from ..spectra import SpectraConfig, spectra_of
from ..spectra.compute import INPUT_COLUMNS, resolve, usable
from ..spectra.variability import smooth_fit

VIEWS = ("wavelength", "detector", "normalised")
_ERRORBARS = {"fmt": "none", "ecolor": "0.25", "elinewidth": 0.9, "capsize": 1.5, "zorder": 3}


def _figure(ncols: int = 1, nrows: int = 1, width: float = 7.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def _flux_column(rows: pd.DataFrame, column: str | None) -> str:
    return column or resolve(rows, SpectraConfig())[0]


def _summaries(rows: pd.DataFrame, spectrum: pd.DataFrame | None,
               source: pd.Series | None) -> tuple[pd.DataFrame, pd.Series | None]:
    """The source's channel spectrum and its summary row (the variability test), computed from
    ``rows`` with the default :class:`~spxdask.spectra.SpectraConfig` where not given."""
    if (spectrum is None or source is None) and len(rows) and set(INPUT_COLUMNS) <= set(rows.columns):
        computed, sources = spectra_of(rows)
        spectrum = computed if spectrum is None else spectrum
        source = sources.iloc[0] if source is None else source
    return (spectrum if spectrum is not None else pd.DataFrame(columns=["detector"])), source


def title(rows: pd.DataFrame, source: pd.Series | None) -> str:
    """``targetid · RA, Dec · verdict``: where the source is and what the variability test found."""
    if not len(rows):
        return ""
    where = f" · RA {rows['ra'].iloc[0]:.5f}°, Dec {rows['dec'].iloc[0]:+.5f}°" if {"ra", "dec"} <= set(rows) else ""
    verdict = ""
    if source is not None and np.isfinite(source.get("p_value", np.nan)):
        p = float(source["p_value"])
        verdict = f" · variable (p = {p:.1e})" if bool(source["variable"]) else f" · constant (p = {p:.2f})"
    elif source is not None:
        verdict = " · too few measurements to test variability"
    return f"{rows['targetid'].iloc[0]}{where}{verdict}"


def _normalised(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Each usable row's flux and error divided by the smooth spectrum the variability test fits
    to them (NaN for the rows it leaves out): the scatter about 1 is the test's χ²."""
    config = SpectraConfig(flux_column=column)
    good = usable(rows, config)
    reference = np.full(len(rows), np.nan)
    if good.any():
        error = rows[f"{column}_error"].to_numpy(float)[good]
        reference[good] = smooth_fit(np.zeros(good.sum(), np.int64), 1, rows["wavelength"].to_numpy(float)[good],
                                     rows[column].to_numpy(float)[good], error, knot_spacing=config.knot_spacing,
                                     return_model=True)[2]
    return rows[column].to_numpy(float) / reference, rows[f"{column}_error"].to_numpy(float) / np.abs(reference)


def draw_lightcurve(rows: pd.DataFrame, column: str | None = None, *, view: str = "wavelength",
                    source: pd.Series | None = None) -> Any:
    """One source's light curve as a Figure.

    Parameters
    ----------
    rows : DataFrame
        The source's light-curve rows (:func:`~spxdask.batch.read_lightcurve`).
    column : str, optional
        The flux shown (default: the one the spectra use, see :class:`~spxdask.spectra.SpectraConfig`).
    view : {"wavelength", "detector", "normalised"}
        How the wavelengths are told apart (the module's docstring says how each reads).
    source : Series, optional
        Its row of the run's sources table (``p_value``, ``variable``) for the title; computed
        from ``rows`` with the default :class:`~spxdask.spectra.SpectraConfig` when not given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    column = _flux_column(rows, column)
    source = source if source is not None else _summaries(rows, None, None)[1]
    detectors = sorted(int(d) for d in rows["detector"].unique()) if view == "detector" else [0]
    ncols = min(3, len(detectors))
    nrows = -(-len(detectors) // ncols)
    fig, axes = _figure(ncols, nrows, width=7.0 if ncols == 1 else 4.0 * ncols, height=4.0 if nrows == 1 else 3.0 * nrows)
    if view == "normalised":
        y, dy = _normalised(rows, column)
        axes[0].axhline(1.0, color="0.5", lw=0.8, zorder=1)
        ylabel = f"{column} / spectrum"
    else:
        y, dy = rows[column].to_numpy(float), rows[f"{column}_error"].to_numpy(float)
        ylabel = f"{column} [µJy]"
    mjd, wavelength = rows["mjd"].to_numpy(float), rows["wavelength"].to_numpy(float)
    for ax, det in zip(axes, detectors):
        mine = rows["detector"].to_numpy() == det if view == "detector" else np.ones(len(rows), bool)
        points = ax.scatter(mjd[mine], y[mine], c=wavelength[mine], cmap="viridis", s=12, zorder=2,
                            vmin=wavelength.min() if len(rows) else None, vmax=wavelength.max() if len(rows) else None)
        ax.errorbar(mjd[mine], y[mine], yerr=dy[mine], **_ERRORBARS)
        ax.set(xlabel="MJD", ylabel=ylabel, title=f"D{det}" if view == "detector" else "")
    for ax in axes[len(detectors):]:
        ax.set_visible(False)
    fig.colorbar(points, ax=list(axes[:len(detectors)]), label="wavelength [µm]")
    fig.suptitle(title(rows, source), fontsize="medium")
    return fig


def plot_lightcurve(rows: pd.DataFrame, path: str | Path, column: str | None = None, *, view: str = "wavelength",
                    source: pd.Series | None = None) -> Path:
    """Write :func:`draw_lightcurve` as PNG (folders made as needed); returns ``path``.

    Parameters
    ----------
    rows : DataFrame
        The source's light-curve rows.
    path : path
        The PNG to write.
    column : str, optional
        The flux shown.
    view : {"wavelength", "detector", "normalised"}
        How the wavelengths are told apart.
    source : Series, optional
        Its row of the run's sources table.
    """
    return save_figure(draw_lightcurve(rows, column, view=view, source=source), path, dpi=110)


def draw_spectrum(rows: pd.DataFrame, column: str | None = None, *, spectrum: pd.DataFrame | None = None,
                  source: pd.Series | None = None, log_wavelength: bool = False) -> Any:
    """A source's channel spectrum over its raw measurements, as a Figure.

    Parameters
    ----------
    rows : DataFrame
        The source's light-curve rows (drawn in grey).
    column : str, optional
        The flux of the raw points (default: the one the spectra use).
    spectrum : DataFrame, optional
        Its channel spectrum (:func:`~spxdask.batch.read_spectrum`); computed from ``rows``
        with the default :class:`~spxdask.spectra.SpectraConfig` when not given.
    source : Series, optional
        Its row of the run's sources table, for the title; computed when not given.
    log_wavelength : bool
        Logarithmic wavelength axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    column = _flux_column(rows, column)
    spectrum, source = _summaries(rows, spectrum, source)
    fig, (ax,) = _figure()
    ax.errorbar(rows["wavelength"], rows[column], yerr=rows[f"{column}_error"], fmt=".", color="0.7",
                ecolor="0.75", elinewidth=0.6, markersize=3, zorder=1, label="measurements")
    for det in sorted(spectrum["detector"].unique()):
        chans = spectrum[spectrum["detector"] == det]
        ax.errorbar(chans["wavelength"], chans["flux"], yerr=chans["flux_error"], fmt="o", markersize=3.5,
                    elinewidth=1.0, capsize=2, color=f"C{int(det) - 1}", zorder=2, label=f"D{int(det)}")
    if log_wavelength:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_xticks([0.75, 1, 1.5, 2, 3, 4, 5])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small", ncols=2)
    ax.set(xlabel="wavelength [µm]", ylabel="flux [µJy]")
    fig.suptitle(title(rows, source), fontsize="medium")
    return fig


def plot_spectrum(rows: pd.DataFrame, path: str | Path, column: str | None = None, *,
                  spectrum: pd.DataFrame | None = None, source: pd.Series | None = None,
                  log_wavelength: bool = False) -> Path:
    """Write :func:`draw_spectrum` as PNG (folders made as needed); returns ``path``.

    Parameters
    ----------
    rows : DataFrame
        The source's light-curve rows.
    path : path
        The PNG to write.
    column : str, optional
        The flux of the raw points.
    spectrum : DataFrame, optional
        Its channel spectrum.
    source : Series, optional
        Its row of the run's sources table.
    log_wavelength : bool
        Logarithmic wavelength axis.
    """
    return save_figure(draw_spectrum(rows, column, spectrum=spectrum, source=source, log_wavelength=log_wavelength),
                       path, dpi=110)
