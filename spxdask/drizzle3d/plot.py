"""PNGs of a cube: one plane, and a spectrum taken from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._io import save_figure
from .io import load_cube


def plot_cube_slice(cube_path: str | Path, png: str | Path, plane: int | None = None) -> Path:
    """Image of plane ``plane`` (default: the plane with the most input images) of a cube."""
    from matplotlib.figure import Figure  # no pyplot: the user's backend stays as it is

    cube = load_cube(cube_path)
    if plane is None:
        plane = int(np.argmax(cube["wavelength"]["N_INPUT_SC"]))
    data = cube["sci"][plane]
    finite = data[np.isfinite(data)]
    lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(data, origin="lower", cmap="magma", vmin=lo, vmax=hi)
    fig.colorbar(im, ax=ax, label="MJy/sr")
    lam = cube["wavelength"]["LAMBDA"][plane]
    ax.set(title=f"{Path(cube_path).name}: plane {plane}, {lam:.3f} µm", xlabel="x [pix]", ylabel="y [pix]")
    return save_figure(fig, png, dpi=100)


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
