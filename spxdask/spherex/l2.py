"""Open a SPHEREx Level-2 spectral image (QR2 or QR3 layout) from a path or fsspec URL.

Everything is lazy: opening reads only the HDU headers (and checks them); arrays are read
when asked for, whole or as sub-sections. No Dask in here.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
from astropy import log
from astropy.io import fits
from astropy.wcs import WCS
from scipy.interpolate import RegularGridInterpolator

from .._io import is_remote, is_transient
from ..geometry import grid_corners
from .format import EPSF, FLAGS, IMAGE, IMAGE_HDUS, PSF, REQUIRED_KEYWORDS, VARIANCE, WCS_WAVE, ZODI
from .headers import celestial_wcs, numeric_value, psf_header_transposed, psf_zones
from .psf import EffectivePSF, OversampledPSF, epsf_table
from .units import pixel_area_arcsec2
from .wave import wave_lookup, wave_map

_AREA_NODES = 33
#: runs of rows closer than this are fetched as one ranged request (64 KiB of a 2040-wide
#: float32 image: less than a request costs)
ROW_GAP = 8
_STORED = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}

Section = tuple[slice, slice]


def row_runs(rows: np.ndarray, gap: int = ROW_GAP) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in ``rows``, runs fewer than ``gap`` rows apart merged."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], np.asarray(rows, bool), [False]]).astype(np.int8)))
    runs: list[tuple[int, int]] = []
    for start, stop in zip(edges[::2].tolist(), edges[1::2].tolist()):
        if runs and start - runs[-1][1] < gap:
            runs[-1] = (runs[-1][0], stop)
        else:
            runs.append((start, stop))
    return runs


class L2FormatError(ValueError):
    """An L2 file is unreadable, truncated, incomplete or malformed.

    The message names the file and what is wrong with it.

    Parameters
    ----------
    source : str
        The file.
    problem : str
        What is wrong with it.
    """

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{source}: {problem}")


@dataclass(frozen=True)
class L2Meta:
    """Header metadata of one L2 image.

    Parameters
    ----------
    obs_id : str
        OBSID.
    detector : int
        1-6.
    mjd_beg, mjd_avg, mjd_end : float
        MJD-BEG, MJD-AVG, MJD-END.
    exptime : float
        Exposure time (s).
    psf_fwhm : float
        PSF_FWHM (arcsec).
    omega_median : float
        Median pixel solid angle (arcsec² per pixel).
    version : str
        The pipeline VERSION.
    layout : {"qr2", "qr3"}
        The release layout.
    filename : str
        The file's name.
    """

    obs_id: str
    detector: int
    mjd_beg: float
    mjd_avg: float
    mjd_end: float
    exptime: float
    psf_fwhm: float  # arcsec
    omega_median: float  # arcsec^2 per pixel
    version: str
    layout: str  # "qr2" or "qr3"
    filename: str

    @property
    def band(self) -> str:
        return f"D{self.detector}"

    @property
    def mjd(self) -> float:
        """Midpoint of MJD-BEG and MJD-END (the reference package's ``mjd``)."""
        return 0.5 * (self.mjd_beg + self.mjd_end)


@contextlib.contextmanager
def _reading(source: str, problem: str) -> Iterator[None]:
    """Errors met inside become ``L2FormatError(source, "<problem> (<error>)")``, except
    L2FormatError itself, a missing file and network faults that may pass
    (:func:`~spxdask._io.is_transient`): those are raised as they are."""
    try:
        yield
    except (L2FormatError, FileNotFoundError):
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        raise L2FormatError(source, f"{problem} ({exc})") from exc


def _hdu_data_bytes(header: fits.Header) -> int:
    naxes = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header.get("NAXIS", 0)) + 1)]
    n = int(np.prod(naxes)) if naxes else 0
    return abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n)


def _open_fits(source: str, storage_options: dict | None, block_size: int) -> tuple[Any, fits.HDUList, int]:
    """(fsspec file or None, lazily loaded HDU list, size in bytes) of a local path or URL."""
    fileobj = None
    try:
        with _reading(source, "not a readable FITS file"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if is_remote(source):
                fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
                fs.invalidate_cache(path)  # the object as it is now (an earlier listing's size and ETag may be stale)
                size = fs.size(path)
                fileobj = fs.open(path, "rb", block_size=block_size, cache_type="readahead")
                return fileobj, fits.open(fileobj, lazy_load_hdus=True), size
            path = source.removeprefix("file://")
            size = os.path.getsize(path)
            return None, fits.open(path, memmap=True, lazy_load_hdus=True), size
    except BaseException:
        if fileobj is not None:
            fileobj.close()
        raise


def _raw_header(hdu: Any, fileobj: Any, source: str) -> str:
    """The header of ``hdu`` as stored (80-character cards), read again from the file:
    astropy's ``Header.tostring()`` re-verifies every card, which is much slower."""
    info = hdu.fileinfo()
    start, stop = info["hdrLoc"], info["datLoc"]
    if fileobj is not None:
        fileobj.seek(start)
        raw = fileobj.read(stop - start)
    else:
        with open(source.removeprefix("file://"), "rb") as f:
            f.seek(start)
            raw = f.read(stop - start)
    return raw.decode("ascii", errors="replace")


def read_footprint(source: str | os.PathLike, *, storage_options: dict | None = None,
                   block_size: int = 2**15) -> np.ndarray:
    """The footprint of an L2 file (as :meth:`L2File.footprint`) from its IMAGE header alone.

    Reads the headers up to IMAGE and nothing after: much faster than opening the file with
    :class:`L2File`, which checks every HDU, for deciding which files to open at all.

    Parameters
    ----------
    source : path or URL
        The file.
    storage_options : dict, optional
        fsspec options for a remote file.
    block_size : int
        Bytes read per request.

    Returns
    -------
    ndarray
        The four corners (ra, dec) in degrees.

    Raises
    ------
    L2FormatError
        If the file is not FITS or has no readable IMAGE header and celestial WCS.
    """
    source = str(source)
    fileobj, hdul, _ = _open_fits(source, storage_options, block_size)
    try:
        with _reading(source, "unreadable IMAGE header or celestial WCS"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for hdu in hdul:  # lazily: each header is read only when reached
                text = _raw_header(hdu, fileobj, source)
                cards = {c[:8].rstrip(): c for c in (text[i:i + 80] for i in range(0, len(text), 80))}
                if cards.get("EXTNAME", "")[10:].split("/", 1)[0].strip(" '") == IMAGE:
                    break
            else:
                raise L2FormatError(source, "no IMAGE HDU")
            shape = (int(numeric_value(cards["NAXIS2"])), int(numeric_value(cards["NAXIS1"])))
            return grid_corners(celestial_wcs(text, shape), shape)
    finally:
        hdul.close()
        if fileobj is not None:
            fileobj.close()


class L2File:
    """A SPHEREx L2 MEF file, opened lazily.

    Parameters
    ----------
    source : str or os.PathLike
        Local path or any fsspec URL (``https://...``, ``s3://...``).
    storage_options : dict, optional
        Passed to fsspec for remote URLs (e.g. ``{"anon": True}`` for S3).
    block_size : int
        Read-ahead block of remote reads: small blocks make opening read little more than the
        headers; sections read their rows.

    Raises
    ------
    L2FormatError
        If the file is not FITS, is truncated, lacks an HDU or has inconsistent shapes.

    Examples
    --------
    >>> with L2File("level2_2025W51_1A_0684_2D3_spx_l2b-v21-2025-354.fits") as f:  # doctest: +SKIP
    ...     img = f.image()
    ...     wl, bw = f.wavelength(x, y)
    """

    def __init__(self, source: str | os.PathLike, *, storage_options: dict | None = None,
                 block_size: int = 2**18):
        self.source = str(source)
        self.filename = Path(self.source.split("?")[0]).name
        self._header_texts: dict[str, str] = {}
        self._fileobj, self._hdul, size = _open_fits(self.source, storage_options, block_size)
        try:
            # astropy raises OSError/ValueError/TypeError for non-FITS input; its warnings on bad
            # files become errors below
            with _reading(self.source, "not a readable FITS file"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._hdul.readall()
        except BaseException:
            self.close()
            raise
        self.size = size
        try:
            self._validate(size)
        except L2FormatError:
            self.close()
            raise

    # -- structure ---------------------------------------------------------------------
    def _validate(self, size: int) -> None:
        names = [h.name for h in self._hdul]
        # HDUs by name, looked up once (astropy's lookup by name parses every HDU's EXTNAME)
        self._hdus: dict[str, Any] = {}
        for name, hdu in zip(names, self._hdul):
            self._hdus.setdefault(name.upper(), hdu)
        for i, hdu in enumerate(self._hdul):
            end = hdu.fileinfo()["datLoc"] + _hdu_data_bytes(hdu.header)
            if end > size:
                raise L2FormatError(self.source, f"truncated: HDU {i} ({hdu.name}) needs {end} bytes, file has {size}")
        missing = [n for n in (*IMAGE_HDUS, WCS_WAVE) if n not in names]
        if PSF not in names and EPSF not in names:
            missing.append("PSF or EPSF")
        if missing:
            raise L2FormatError(self.source, f"missing HDU(s) {', '.join(missing)}; has {names}")
        shapes = {n: self._shape(n) for n in IMAGE_HDUS}
        if len(set(shapes.values())) != 1 or len(shapes[IMAGE]) != 2:
            raise L2FormatError(self.source, f"image HDUs must share one 2-D shape, got {shapes}")
        absent = [k for k in REQUIRED_KEYWORDS if k not in self.header]
        if absent:
            raise L2FormatError(self.source, f"IMAGE header lacks {', '.join(absent)}")

    def _shape(self, name: str) -> tuple[int, ...]:
        h = self._hdus[name].header
        if isinstance(self._hdus[name], fits.CompImageHDU):
            return tuple(int(h[f"NAXIS{i}"]) for i in range(int(h["NAXIS"]), 0, -1))
        return tuple(int(h.get(f"NAXIS{i}", 0)) for i in range(int(h.get("NAXIS", 0)), 0, -1))

    @property
    def layout(self) -> str:
        """``"qr3"`` when the file has an EPSF table, else ``"qr2"``."""
        return "qr3" if EPSF in self._hdus else "qr2"

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the image HDUs."""
        return self._shape(IMAGE)  # type: ignore[return-value]

    @property
    def header(self) -> fits.Header:
        """The IMAGE header."""
        return self._hdus[IMAGE].header

    def _header_text(self, name: str) -> str:
        """The header of HDU ``name`` as stored (:func:`_raw_header`), read once."""
        if name not in self._header_texts:
            self._header_texts[name] = _raw_header(self._hdus[name], self._fileobj, self.source)
        return self._header_texts[name]

    @cached_property
    def meta(self) -> L2Meta:
        h = self.header
        try:
            det = int(h["DETECTOR"])
            beg, end = float(h["MJD-BEG"]), float(h["MJD-END"])
            return L2Meta(
                obs_id=str(h["OBSID"]).strip(),
                detector=det,
                mjd_beg=beg,
                mjd_avg=float(h.get("MJD-AVG", 0.5 * (beg + end))),
                mjd_end=end,
                exptime=float(h.get("XPOSURE", np.nan)),
                psf_fwhm=float(h.get("PSF_FWHM", np.nan)),
                omega_median=float(h.get("OMEGA_MEDIAN", np.nan)),
                version=str(self._hdul[0].header.get("VERSION", "")),
                layout=self.layout,
                filename=self.filename,
            )
        except (TypeError, ValueError) as exc:
            raise L2FormatError(self.source, f"bad IMAGE header value ({exc})") from exc

    # -- arrays --------------------------------------------------------------------------
    def _read(self, name: str, section: Section | None, dtype: str) -> np.ndarray:
        hdu = self._hdus[name]
        with _reading(self.source, f"cannot read {name} data"):
            if section is None:
                data = hdu.data
            elif is_remote(self.source) or isinstance(hdu, fits.CompImageHDU):
                data = hdu.section[section]  # only the rows (tiles) of the section are fetched
            else:
                data = hdu.data[section]  # memory-mapped: one slice, not a read per row
            return np.asarray(data, dtype=dtype)

    def raw(self, name: str) -> np.ndarray:
        """The data of image HDU ``name`` as stored: memory-mapped for local files (pages are
        read when touched), possibly big-endian. For kernels that touch only some pixels.

        Parameters
        ----------
        name : {"IMAGE", "FLAGS", "VARIANCE", "ZODI"}

        Returns
        -------
        ndarray
        """
        if name not in IMAGE_HDUS:
            raise ValueError(f"raw() serves the image HDUs {IMAGE_HDUS}, not {name!r}")
        with _reading(self.source, f"cannot read {name} data"):
            return self._hdus[name].data

    def raw_rows(self, names: list[str], rows: np.ndarray) -> list[np.ndarray]:
        """The image HDUs ``names`` as stored, for a caller that reads only the image rows where
        ``rows`` (bool, one per row) is True.

        Local files: :meth:`raw` (memory-mapped: the pages touched are read). Remote files:
        only those rows are fetched (the runs of rows of every HDU in one batch of concurrent
        ranged requests; tile-compressed HDUs by their row tiles), the others hold NaN or, in
        integer HDUs, every bit set (all flags raised): a kernel straying outside ``rows``
        finds no usable pixel there.

        Parameters
        ----------
        names : list of str
            Image HDUs.
        rows : ndarray of bool
            One per image row: the rows read.

        Returns
        -------
        list of ndarray
        """
        if not is_remote(self.source):
            return [self.raw(name) for name in names]
        runs = row_runs(rows)
        ranges, out = [], []
        for name in names:
            hdu, shape = self._hdus[name], self._shape(name)
            dtype = np.dtype(_STORED[int(hdu.header["BITPIX"])])  # tile-compressed HDUs: the image's
            array = np.full(shape, np.nan if dtype.kind == "f" else -1, dtype)
            out.append(array)
            if isinstance(hdu, fits.CompImageHDU):
                for start, stop in runs:
                    array[start:stop] = self._read(name, (slice(start, stop), slice(None)), array.dtype.str)
                continue
            row_bytes = shape[1] * dtype.itemsize
            first = hdu.fileinfo()["datLoc"]
            ranges += [(array, start, stop, first + start * row_bytes, first + stop * row_bytes) for start, stop in runs]
        if ranges:
            fs, path = self._fileobj.fs, self._fileobj.path
            blobs = fs.cat_ranges([path] * len(ranges), [r[3] for r in ranges], [r[4] for r in ranges], on_error="raise")
            for (array, start, stop, begin, end), blob in zip(ranges, blobs):
                if len(blob) != end - begin:
                    raise OSError(f"{self.source}: bytes {begin}-{end} came back short ({len(blob)} bytes)")
                array[start:stop] = np.frombuffer(blob, array.dtype).reshape(stop - start, -1)
        return out

    def image(self, *, section: Section | None = None) -> np.ndarray:
        """IMAGE (MJy/sr, not zodi-subtracted), float32, native byte order.

        Parameters
        ----------
        section : (slice, slice), optional
            Rows and columns to read; default the whole image.

        Returns
        -------
        ndarray
        """
        return self._read(IMAGE, section, "=f4")

    def flags(self, *, section: Section | None = None) -> np.ndarray:
        """FLAGS bitmask, int32 (see :mod:`spxdask.spherex.flags`).

        Parameters
        ----------
        section : (slice, slice), optional
            Rows and columns to read; default the whole image.

        Returns
        -------
        ndarray
        """
        return self._read(FLAGS, section, "=i4")

    def variance(self, *, section: Section | None = None) -> np.ndarray:
        """VARIANCE ((MJy/sr)^2), float32.

        Parameters
        ----------
        section : (slice, slice), optional
            Rows and columns to read; default the whole image.

        Returns
        -------
        ndarray
        """
        return self._read(VARIANCE, section, "=f4")

    def zodi(self, *, section: Section | None = None) -> np.ndarray:
        """ZODI model (MJy/sr, not subtracted from IMAGE), float32.

        Parameters
        ----------
        section : (slice, slice), optional
            Rows and columns to read; default the whole image.

        Returns
        -------
        ndarray
        """
        return self._read(ZODI, section, "=f4")

    # -- celestial WCS -------------------------------------------------------------------
    @cached_property
    def wcs(self) -> WCS:
        """The celestial TAN-SIP WCS of the IMAGE HDU."""
        try:
            return celestial_wcs(self._header_text(IMAGE), self.shape)
        except Exception as exc:
            raise L2FormatError(self.source, f"bad celestial WCS ({exc})") from exc

    def footprint(self) -> np.ndarray:
        """(4, 2) array of (ra, dec) degrees: the outer pixel-edge corners through the SIP WCS,
        in the order of IRSA's ``s_region``."""
        return grid_corners(self.wcs, self.shape)

    def s_region(self) -> str:
        """The footprint as an ObsCore ``s_region`` string (closed ICRS polygon)."""
        corners = np.vstack([self.footprint(), self.footprint()[:1]])
        return "POLYGON ICRS " + " ".join(f"{v:.10g}" for v in corners.ravel())

    @cached_property
    def _area_grid(self) -> RegularGridInterpolator:
        ny, nx = self.shape
        gy, gx = np.linspace(-0.5, ny - 0.5, _AREA_NODES), np.linspace(-0.5, nx - 0.5, _AREA_NODES)
        yy, xx = np.meshgrid(gy, gx, indexing="ij")
        area = pixel_area_arcsec2(self.wcs, xx.ravel(), yy.ravel()).reshape(yy.shape)
        return RegularGridInterpolator((gy, gx), area)

    def pixel_area(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Solid angle (arcsec^2) of the pixels at 0-based (x, y), through the SIP WCS: exact
        on a 33 x 33 grid over the image, interpolated bilinearly between (the SIP area
        changes by ~5e-3 across a detector; the interpolation is good to ~3e-6). Positions
        beyond the image take the area at its edge.

        Parameters
        ----------
        x, y : ndarray
            0-based pixel positions.

        Returns
        -------
        ndarray
        """
        ny, nx = self.shape
        points = np.column_stack([np.clip(np.ravel(y), -0.5, ny - 0.5), np.clip(np.ravel(x), -0.5, nx - 0.5)])
        return self._area_grid(points)

    def parent_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based parent-detector pixel of 0-based file pixel (x, y) (the 'A' WCS).

        Parameters
        ----------
        x, y : ndarray
            0-based pixel positions.

        Returns
        -------
        x, y : ndarray
        """
        h = self.header
        return (np.asarray(x) + 1 - float(h.get("CRPIX1A", 1.0)),
                np.asarray(y) + 1 - float(h.get("CRPIX2A", 1.0)))

    # -- spectral WCS --------------------------------------------------------------------
    @cached_property
    def _wave_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with _reading(self.source, "bad WCS-WAVE table"):
            row = self._hdus[WCS_WAVE].data[0]
            xs = np.asarray(row["X"], float).ravel()
            ys = np.asarray(row["Y"], float).ravel()
            values = np.asarray(row["VALUES"], float).reshape(ys.size, xs.size, 2)
        if not (np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0) and np.all(np.isfinite(values))):
            raise L2FormatError(self.source, "bad WCS-WAVE table (control points not increasing or non-finite values)")
        return xs, ys, values

    def wavelength(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Wavelength and bandwidth (micron) at 0-based pixel positions (x, y).

        A numpy bilinear evaluation of the WAVE-TAB lookup, equal to astropy/wcslib's
        (:meth:`spectral_wcs`) to better than 1e-6 micron inside the control grid.

        Parameters
        ----------
        x, y : ndarray
            0-based pixel positions.

        Returns
        -------
        wavelength, bandwidth : ndarray
        """
        xs, ys, values = self._wave_table
        return wave_lookup(xs, ys, values, *self._table_coords(x, y))

    def _table_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """1-based WAVE-TAB table coordinates of 0-based pixel positions."""
        h = self.header
        px = float(h.get("CRVAL1W", 1)) + float(h.get("CDELT1W", 1)) * (np.asarray(x, float) + 1 - float(h.get("CRPIX1W", 1)))
        py = float(h.get("CRVAL2W", 1)) + float(h.get("CDELT2W", 1)) * (np.asarray(y, float) + 1 - float(h.get("CRPIX2W", 1)))
        return px, py

    def wavelength_map(self, *, section: Section | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel wavelength and bandwidth maps (micron) for the image or a section of it.

        Parameters
        ----------
        section : (slice, slice), optional
            Rows and columns; default the whole image.

        Returns
        -------
        wavelength, bandwidth : ndarray
        """
        ny, nx = self.shape
        sy, sx = section if section is not None else (slice(0, ny), slice(0, nx))
        xs, ys, values = self._wave_table
        px, py = self._table_coords(np.arange(*sx.indices(nx)), np.arange(*sy.indices(ny)))
        return wave_map(xs, ys, values, px, py)

    def spectral_wcs(self) -> WCS:
        """astropy's reading of the 'W' WAVE-TAB WCS, with the primary SIP removed
        (the reference evaluation; slow, for checks)."""
        level = log.level
        log.setLevel("WARNING")  # astropy announces (INFO) that it copies SIP onto 'W'
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = WCS(self.header, fobj=self._hdul, key="W")
        finally:
            log.setLevel(level)
        w.sip = None
        return w

    # -- PSF -----------------------------------------------------------------------------
    @cached_property
    def psf(self) -> OversampledPSF | EffectivePSF:
        """The file's PSF model (QR2 oversampled cube or QR3 ePSF table), zone centres in
        0-based parent-detector pixels. QR2 files of pipeline versions 6.4 to 6.5.5 without
        ``+psffix1`` have their transposed zone centres corrected (IRSA's PSF erratum)."""
        with _reading(self.source, "bad PSF extension"):
            if self.layout == "qr3":
                return epsf_table(self._hdus[EPSF])
            hdu = self._hdus[PSF]
            xctr, yctr, oversamp = psf_zones(self._header_text(PSF))
            if psf_header_transposed(self.meta.version):  # IRSA's PSF erratum, corrected
                xctr, yctr = yctr, xctr
            # the cube as stored (memory-mapped for local files): stamps read the planes' centres
            return OversampledPSF(data=hdu.data, xctr=xctr, yctr=yctr, oversamp=oversamp)

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        hdul = getattr(self, "_hdul", None)
        if hdul is not None:
            hdul.close()
        if self._fileobj is not None:
            self._fileobj.close()

    def __enter__(self) -> L2File:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"L2File({self.source!r}, layout={self.layout!r}, shape={self.shape})"
