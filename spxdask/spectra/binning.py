"""Channel spectra: measurements binned into the 102 SPHEREx spectral channels (numpy only).

Each measurement has the wavelength of its source's pixel and the detector that took it. It
goes to a channel of that detector whose [WL_MIN, WL_MAX] contains its wavelength; where two
channels overlap (neighbouring channels share a few nm), to the one whose centre is nearest.
A measurement outside every channel of its detector (the detectors' edges reach a little beyond
the channel table) enters no channel. Per (source, channel): the inverse-variance weighted
mean flux, its error (Σw)^-1/2, the weighted mean wavelength of those measurements, their
number, and their χ² about the mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..spherex.channels import channel_table

#: Columns of a channel spectrum, in order (a contract).
SPECTRUM_COLUMNS = ("targetid", "detector", "channel", "wavelength", "wavelength_min", "wavelength_max", "flux",
                    "flux_error", "n_obs", "chi2")
UNITS = {"wavelength": "um", "wavelength_min": "um", "wavelength_max": "um", "flux": "uJy", "flux_error": "uJy"}


def assign_channels(detector: np.ndarray, wavelength: np.ndarray) -> np.ndarray:
    """Row of :func:`~spxdask.spherex.channels.channel_table` of each measurement's channel.

    Parameters
    ----------
    detector : ndarray
        Each measurement's detector, 1-6.
    wavelength : ndarray
        Each measurement's wavelength (µm).

    Returns
    -------
    ndarray of int64
        The channel's row, or -1 when the wavelength lies outside every channel of the detector.
    """
    table = channel_table()
    detector = np.asarray(detector)
    wavelength = np.asarray(wavelength, float)
    out = np.full(detector.shape, -1, np.int64)
    for det in np.unique(detector):
        rows = np.flatnonzero(table["detector"].to_numpy() == det)
        if rows.size == 0:
            continue
        mine = np.flatnonzero(detector == det)
        lam = wavelength[mine, None]
        inside = (lam >= table["wl_min"].to_numpy()[rows]) & (lam <= table["wl_max"].to_numpy()[rows])
        distance = np.where(inside, np.abs(lam - table["wavelength"].to_numpy()[rows]), np.inf)
        best = np.argmin(distance, axis=1)
        out[mine] = np.where(inside.any(axis=1), rows[best], -1)
    return out


def channel_spectra(source: np.ndarray, targetids: np.ndarray, channel: np.ndarray, wavelength: np.ndarray,
                    flux: np.ndarray, error: np.ndarray) -> pd.DataFrame:
    """Weighted channel means of measurements.

    Parameters
    ----------
    source : int array
        Index of each measurement's source in ``targetids`` (sorted ids give sorted output).
    targetids : array
        The sources' ids.
    channel : int array
        Channel-table row of each measurement (:func:`assign_channels`); -1 rows are ignored.
    wavelength, flux, error : float arrays
        Per measurement (µm, µJy, µJy); errors must be finite and positive.

    Returns
    -------
    DataFrame
        :data:`SPECTRUM_COLUMNS`, one row per (source, channel) with measurements, sorted by
        source then channel wavelength.
    """
    table = channel_table()
    keep = channel >= 0
    n_channels = len(table)
    key = np.asarray(source)[keep].astype(np.int64) * n_channels + channel[keep]
    groups, inverse = np.unique(key, return_inverse=True)
    w = 1.0 / error[keep] ** 2
    sw = np.bincount(inverse, w, groups.size)
    mean = np.bincount(inverse, w * flux[keep], groups.size) / sw
    lam = np.bincount(inverse, w * wavelength[keep], groups.size) / sw
    chi2 = np.bincount(inverse, w * (flux[keep] - mean[inverse]) ** 2, groups.size)
    row = groups % n_channels
    return pd.DataFrame({
        "targetid": np.asarray(targetids)[groups // n_channels],
        "detector": table["detector"].to_numpy()[row].astype(np.int8),
        "channel": table["subchan"].to_numpy()[row].astype(np.int8),
        "wavelength": lam,
        "wavelength_min": table["wl_min"].to_numpy()[row],
        "wavelength_max": table["wl_max"].to_numpy()[row],
        "flux": mean,
        "flux_error": 1.0 / np.sqrt(sw),
        "n_obs": np.bincount(inverse, minlength=groups.size).astype(np.int32),
        "chi2": chi2,
    }, columns=list(SPECTRUM_COLUMNS))
