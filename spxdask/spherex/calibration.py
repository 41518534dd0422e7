"""IRSA's ePSF calibration files: effective PSFs for images whose files carry the older PSF.

IRSA advises the effective PSF (pixel response included, QR3's ``EPSF`` table) for science,
and publishes it as calibration files, one per detector (``epsf_D<n>_spx_cal-epsf-<version>.fits``,
the source the QR3 files name in their ``EPSF`` history), for the images of pipeline versions
before 7.0, whose files carry the QR2 optical-PSF cube. A folder of them replaces those files'
PSF. No Dask in here.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from astropy.io import fits

from .format import EPSF
from .psf import EffectivePSF, epsf_table

#: File names of the calibration files: the detector, then the product's version.
NAME = re.compile(r"epsf_D(?P<detector>[1-6])_.*\.fits$")


class CalibrationError(ValueError):
    """An ePSF calibration folder or file is unusable; the message names it."""


def check_folder(folder: str | Path) -> None:
    """Raise unless ``folder`` holds at least one ePSF calibration file.

    Parameters
    ----------
    folder : path

    Raises
    ------
    CalibrationError
        Naming the folder.
    """
    root = Path(folder).expanduser()
    if not root.is_dir() or not any(NAME.match(p.name) for p in root.iterdir()):
        raise CalibrationError(f"{root}: no folder of ePSF calibration files (epsf_D<n>_*.fits)")


def calibration_file(folder: str | Path, detector: int) -> Path:
    """The ePSF calibration file of ``detector`` in ``folder`` (the last by name: the newest
    version when several are there).

    Parameters
    ----------
    folder : path
    detector : int

    Returns
    -------
    Path

    Raises
    ------
    CalibrationError
        When the folder is missing or holds no file for the detector.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CalibrationError(f"{root}: no such folder of ePSF calibration files")
    found = sorted(p for p in root.iterdir() if (m := NAME.match(p.name)) and int(m["detector"]) == int(detector))
    if not found:
        raise CalibrationError(f"{root}: no ePSF calibration file of detector D{detector} (epsf_D{detector}_*.fits)")
    return found[-1]


def stamp(folder: str | Path, detector: int) -> dict:
    """What identifies the calibration used for ``detector``: its name, size and modification
    time (a changed file gives another fingerprint).

    Parameters
    ----------
    folder : path
    detector : int

    Returns
    -------
    dict
    """
    path = calibration_file(folder, detector)
    info = path.stat()
    return {"file": path.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def calibration_epsf(folder: str | Path, detector: int) -> EffectivePSF:
    """The effective PSF of ``detector`` from the calibration files in ``folder``.

    Parameters
    ----------
    folder : path
    detector : int

    Returns
    -------
    EffectivePSF

    Raises
    ------
    CalibrationError
        When the file is missing or has no ePSF table.
    """
    path = calibration_file(folder, detector)
    return _read(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=12)
def _read(path: Path, _mtime: int) -> EffectivePSF:
    """One calibration file's ePSF (cached per file and modification time: every image of a
    detector in a worker shares it)."""
    try:
        with fits.open(path) as hdul:
            tables = [h for h in hdul if isinstance(h, fits.BinTableHDU) and "EPSF" in h.columns.names]
            hdu = hdul[EPSF] if EPSF in hdul else (tables[0] if tables else None)
            if hdu is None:
                raise CalibrationError(f"{path}: no ePSF table (a binary table with an EPSF column)")
            return epsf_table(hdu)
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, CalibrationError):
            raise
        raise CalibrationError(f"{path}: unreadable as an ePSF calibration file ({type(exc).__name__}: {exc})") from exc
