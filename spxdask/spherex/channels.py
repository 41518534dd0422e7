"""SPHEREx detectors, bands and the 102-row spectral channel table.

The channel table is packaged as ``data/spectral_channels.csv``; its header comment records
how it was derived from the SPHEREx calibration product
``spectral_channels_spx_cal-sch-v1-2026-106.fits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from .format import N_PIX, PIXEL_SCALE_ARCSEC  # noqa: F401 - re-exported: detector geometry

DETECTORS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class Detector:
    """One SPHEREx detector: its number, band name and nominal wavelength coverage.

    ``em_min_um`` / ``em_max_um`` are the ObsCore ``em_min`` / ``em_max`` of the archive and
    ``wave_top_um`` / ``wave_bottom_um`` the wavelengths of the WCS-WAVE table at the first and
    last row (wavelength decreases with row in every detector).
    """

    number: int
    em_min_um: float
    em_max_um: float
    resolving_power: float
    wave_top_um: float
    wave_bottom_um: float
    wave_x_control: tuple[int, ...]
    wave_y_control: tuple[int, ...]

    @property
    def band(self) -> str:
        return f"D{self.number}"

    @property
    def bandpass_name(self) -> str:
        """The archive's ``energy_bandpassname``."""
        return f"SPHEREx-D{self.number}"


_CP9 = (1, 256, 511, 766, 1021, 1275, 1530, 1785, 2040)
_CP11 = (1, 205, 409, 613, 817, 1021, 1224, 1428, 1632, 1836, 2040)
_CP13 = (1, 171, 341, 511, 681, 851, 1021, 1190, 1360, 1530, 1700, 1870, 2040)
_D3_Y = (1, 36, 71, 105, 140, 141, 379, 617, 855, 1091, 1326, 1564, 1802, 2040)
_D4_Y = tuple(range(1, 1652, 150)) + (1800, 1801, 1841, 1881, 1921, 1960, 2000, 2040)

_DETECTORS = {
    1: Detector(1, 0.74550, 1.11670, 39.1, 1.126, 0.735, _CP9, _CP9),
    2: Detector(2, 1.10330, 1.64990, 41.4, 1.668, 1.086, _CP11, _CP11),
    3: Detector(3, 1.63010, 2.43460, 40.6, 2.439, 1.616, _CP9, _D3_Y),
    4: Detector(4, 2.40270, 3.84730, 34.9, 3.863, 2.398, _CP13, _D4_Y),
    5: Detector(5, 3.81130, 4.43000, 111.6, 4.436, 3.792, _CP11, _CP11),
    6: Detector(6, 4.41150, 5.00960, 127.8, 5.018, 4.395, _CP9, _CP9),
}


def detector(number: int | str) -> Detector:
    """Return the :class:`Detector` for ``1``..``6`` or ``"D1"``..``"D6"``."""
    n = parse_band(number)
    return _DETECTORS[n]


def parse_band(value: int | str) -> int:
    """Turn ``3``, ``"3"``, ``"D3"`` or ``"SPHEREx-D3"`` into the detector number 3."""
    text = str(value).strip().upper().removeprefix("SPHEREX-").removeprefix("D")
    if not text.isdigit() or int(text) not in _DETECTORS:
        raise ValueError(f"unknown SPHEREx band {value!r}: expected D1..D6")
    return int(text)


@lru_cache(maxsize=1)
def channel_table() -> pd.DataFrame:
    """The 102 spectral channels (detector, subchan, wavelength, wl_min, wl_max, r, r_std,
    bandwidth), wavelengths in micron, sorted by wavelength."""
    with resources.files("spxdask.spherex").joinpath("data/spectral_channels.csv").open() as f:
        table = pd.read_csv(f, comment="#")
    table = table.astype({"detector": "int8", "subchan": "int8"})
    return table.sort_values("wavelength", ignore_index=True)


def resolving_power(det: int, wavelength_um: np.ndarray) -> np.ndarray:
    """Median resolving power R of detector ``det`` interpolated at ``wavelength_um``."""
    rows = channel_table()
    rows = rows[rows["detector"] == det]
    return np.interp(wavelength_um, rows["wavelength"], rows["r"])
