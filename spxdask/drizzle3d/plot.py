"""PNGs of a cube: one plane, and a spectrum taken from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import save_figure
from .io import DrizzleCube, load_cube


def draw_cube_slice(cube: DrizzleCube | dict, plane: int | None = None, *, name: str = "") -> Any:
    """One plane of a cube on RA / Dec axes, as a Figure.

    Parameters
    ----------
    cube : DrizzleCube or dict
        A cube (:func:`~spxdask.drizzle3d.load_cube`, or as :func:`~spxdask.drizzle3d.io.as_loaded`
        gives it).
    plane : int, optional
        Default: the plane with the most input images.
    name : str
        Shown in the title (the cube's file name).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from astropy.wcs import WCS
    from matplotlib.figure import Figure  # no pyplot: the user's backend stays as it is

    if plane is None:
        plane = int(np.argmax(cube["wavelength"]["N_INPUT_SC"]))
    data = cube["sci"][plane]
    finite = data[np.isfinite(data)]
    lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot(projection=WCS(cube["sci_header"]).celestial)
    im = ax.imshow(data, origin="lower", cmap="magma", vmin=lo, vmax=hi)
    fig.colorbar(im, ax=ax, label="MJy/sr")
    ax.coords[0].set_axislabel("RA")
    ax.coords[1].set_axislabel("Dec")
    ax.coords.grid(color="white", alpha=0.25, linestyle=":")
    lam = cube["wavelength"]["LAMBDA"][plane]
    ax.set_title(f"{name + ': ' if name else ''}plane {plane}, {lam:.3f} µm")
    return fig


def plot_cube_slice(cube_path: str | Path, png: str | Path, plane: int | None = None) -> Path:
    """Write :func:`draw_cube_slice` of the cube at ``cube_path`` as PNG; returns ``png``.

    Parameters
    ----------
    cube_path : path
        A cube written by :func:`~spxdask.drizzle3d.drizzle`.
    png : path
        The PNG to write.
    plane : int, optional
        Default: the plane with the most input images.
    """
    return save_figure(draw_cube_slice(load_cube(cube_path), plane, name=Path(cube_path).name), png, dpi=100)


def plot_cube_spectrum(spectrum: pd.DataFrame, png: str | Path) -> Path:
    """A spectrum taken from a cube (:func:`~spxdask.drizzle3d.extract_spectrum`): flux and
    error per plane, planes with masked or uncovered aperture voxels in grey."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for flagged, colour, label in ((False, "C0", "planes"), (True, "0.6", "aperture partly uncovered")):
        rows = spectrum[(spectrum["flag"] > 0) == flagged]
        if len(rows):
            ax.errorbar(rows["wavelength"], rows["flux"], yerr=rows["flux_error"], fmt="o", markersize=3,
                        color=colour, elinewidth=0.8, label=label)
    ax.legend(fontsize="small")
    ax.set(xlabel="wavelength [µm]", ylabel="flux [µJy]")
    return save_figure(fig, png, dpi=110)
