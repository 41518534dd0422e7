"""Header parsing of L2 files from their card text: the primary celestial TAN-SIP WCS (through
wcslib, faster than astropy's reading: figures in the docs' benchmark page) and the zone centres of the QR2 PSF cube."""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning, Sip, Wcsprm

#: Keywords of the primary celestial WCS (not the 'A' and 'W' alternates) and of its SIP terms.
_CELESTIAL_KEYWORD = re.compile(
    r"^(WCSAXES|CTYPE[12]|CRPIX[12]|CRVAL[12]|CUNIT[12]|CDELT[12]|CD[12]_[12]|PC[12]_[12]|PV[12]_\d+"
    r"|LONPOLE|LATPOLE|RADESYS|EQUINOX|DATE-OBS|MJD-OBS|MJDREF|TIMESYS)$")
_SIP_KEYWORD = re.compile(r"^(A|B|AP|BP)_(ORDER|DMAX|(\d+)_(\d+))$")


def psf_header_transposed(version: str) -> bool:
    """Whether a file of pipeline ``VERSION`` carries IRSA's PSF erratum: versions 6.4 to 6.5.5
    without the ``+psffix1`` tag wrote the QR2 PSF zone centres transposed (their cards say
    plane = x * ncols + y + 1; the planes are stored x-fast, plane = y * ncols + x + 1)."""
    base, _, local = version.strip().partition("+")
    if "psffix" in local:
        return False
    try:
        parts = tuple(int(p) for p in base.split("."))
    except ValueError:
        return False
    return (6, 4) <= parts <= (6, 5, 5)


@functools.lru_cache(maxsize=64)
def psf_zones(header: str) -> tuple[np.ndarray, np.ndarray, int]:
    """0-based zone centres (x, y) and oversampling of a QR2 PSF extension, from its header
    text. Cached: the zones of a detector's PSF are the same in every file, and parsing their
    242 cards costs more than reading the cube."""
    h = fits.Header.fromstring(header)
    nz = int(h["NAXIS3"])
    centres = []
    for axis in "XY":
        c = np.array([float(h[f"{axis}CTR_{i}"]) for i in range(1, nz + 1)]) - 1
        c.flags.writeable = False
        centres.append(c)
    return centres[0], centres[1], int(h.get("OVERSAMP", 10))


def celestial_wcs(header: str, shape: tuple[int, int]) -> WCS:
    """The primary celestial WCS, with its SIP distortion, of a header given as text (80-column
    cards), equal to astropy's ``WCS(header, naxis=2)`` and faster: wcslib parses the WCS
    cards itself and the numeric SIP cards are read directly, not through astropy's (slow)
    card parser. Raises on a WCS card wcslib cannot parse (where astropy warns and drops it)
    and on a SIP card without a numeric value."""
    cards = [header[i:i + 80] for i in range(0, len(header), 80)]
    keys = [c[:8].rstrip() for c in cards]
    core = "".join(c for c, k in zip(cards, keys) if _CELESTIAL_KEYWORD.match(k))
    w = WCS(naxis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FITSFixedWarning)  # an unparseable WCS card is an error
        w.wcs = Wcsprm(header=core.encode(), key=" ", relax=True)
    sip = {k: numeric_value(c) for c, k in zip(cards, keys) if _SIP_KEYWORD.match(k)}
    if "A_ORDER" in sip and "B_ORDER" in sip:
        terms: dict[str, np.ndarray | None] = {
            p: np.zeros((int(sip[f"{p}_ORDER"]) + 1,) * 2) if f"{p}_ORDER" in sip else None
            for p in ("A", "B", "AP", "BP")}
        for key, value in sip.items():
            m = _SIP_KEYWORD.match(key)
            table = terms[m[1]] if m is not None else None
            if m is not None and m[3] is not None and table is not None:
                table[int(m[3]), int(m[4])] = value
        w.sip = Sip(terms["A"], terms["B"], terms["AP"], terms["BP"], w.wcs.crpix)
    w.wcs.set()
    w.pixel_shape = shape[::-1]
    return w


def numeric_value(card: str) -> float:
    """The value of a numeric header card (``KEYWORD = value / comment``, FITS fixed or free
    format), without astropy's card parser, which these SIP cards do not need."""
    if card[8:10] != "= ":
        raise ValueError(f"card {card[:8].rstrip()!r} has no value")
    try:
        return float(card[10:].split("/", 1)[0].replace("D", "E"))
    except ValueError:
        raise ValueError(f"card {card[:8].rstrip()!r} has no numeric value: {card[10:].strip()!r}") from None
