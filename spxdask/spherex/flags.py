"""SPHEREx L2 FLAGS bits and the default "bad pixel" masks.

Bit numbers follow the FLAGS header of real L2 files (QR2 ``MP_<NAME>`` cards, QR3
``MSKNnnnn`` cards). Bits 20, 25 and 29 appear only in QR3 files.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class Flag(enum.IntFlag):
    """One SPHEREx L2 FLAGS bit."""

    TRANSIENT = 1 << 0
    OVERFLOW = 1 << 1
    SUR_ERROR = 1 << 2
    PHANTOM = 1 << 4
    REFERENCE = 1 << 5
    NONFUNC = 1 << 6
    DICHROIC = 1 << 7
    MISSING_DATA = 1 << 9
    HOT = 1 << 10
    COLD = 1 << 11
    FULLSAMPLE = 1 << 12
    PHANMISS = 1 << 14
    NONLINEAR = 1 << 15
    PERSIST = 1 << 17
    OUTLIER = 1 << 19
    CROSSTALK = 1 << 20
    SOURCE = 1 << 21
    GHOST = 1 << 22
    GHOST_FPA = 1 << 23
    GHOST_EXT = 1 << 24
    STREAK = 1 << 25
    BLOOM = 1 << 26
    SNOWBALL = 1 << 27
    HALO = 1 << 28
    SATELLITE_HALO = 1 << 29


QR3_ONLY = Flag.CROSSTALK | Flag.STREAK | Flag.SATELLITE_HALO

#: Header comments of the QR2 FLAGS HDU.
DESCRIPTIONS: Mapping[Flag, str] = {
    Flag.TRANSIENT: "Transient detected during SUR",
    Flag.OVERFLOW: "Overflow detected during SUR",
    Flag.SUR_ERROR: "Error in onboard processing",
    Flag.PHANTOM: "Phantom pixel",
    Flag.REFERENCE: "Reference pixel",
    Flag.NONFUNC: "Permanently unusable",
    Flag.DICHROIC: "Low efficiency due to dichroic",
    Flag.MISSING_DATA: "Onboard data lost",
    Flag.HOT: "Hot pixel",
    Flag.COLD: "Anomalously low signal",
    Flag.FULLSAMPLE: "Pixel full sample history is available",
    Flag.PHANMISS: "Phantom correction was not applied",
    Flag.NONLINEAR: "Nonlinearity correction cannot be applied reliably",
    Flag.PERSIST: "Persistent charge above threshold",
    Flag.OUTLIER: "Pixel flagged by Detect Outliers",
    Flag.CROSSTALK: "Crosstalk",
    Flag.SOURCE: "Pixel mapped to a known source",
    Flag.GHOST: "Affected by a bright source inside the exposure",
    Flag.GHOST_FPA: "Affected by a bright source on another detector",
    Flag.GHOST_EXT: "Ghost from a source outside the exposure",
    Flag.STREAK: "Streak",
    Flag.BLOOM: "Pixel part of a bloom artifact",
    Flag.SNOWBALL: "Pixel part of a snowball artifact",
    Flag.HALO: "Pixel part of a transient halo",
    Flag.SATELLITE_HALO: "Satellite halo",
}

#: The reference package's (spxquery 0.4.1) default ``bad_flags`` bit list.
REFERENCE_BAD_BITS: tuple[int, ...] = (0, 1, 2, 6, 7, 9, 10, 11, 14, 15, 17, 19)


def mask_from_bits(bits: Iterable[int]) -> int:
    """OR of ``1 << b`` for each bit number ``b``; raises on bits outside 0..31."""
    value = 0
    for b in bits:
        if not 0 <= int(b) < 32:
            raise ValueError(f"flag bit {b} outside 0..31")
        value |= 1 << int(b)
    return value


#: Pixels never used for photometry or drizzle by default: the reference bits plus the
#: artefact bits of later releases. SOURCE and FULLSAMPLE are informational.
DEFAULT_BAD = Flag(mask_from_bits(REFERENCE_BAD_BITS)) | (
    Flag.GHOST | Flag.GHOST_FPA | Flag.GHOST_EXT | Flag.STREAK | Flag.BLOOM
    | Flag.SNOWBALL | Flag.HALO | Flag.SATELLITE_HALO | Flag.CROSSTALK | Flag.MISSING_DATA
)


def names(value: int) -> list[str]:
    """Names of the bits set in ``value`` (unknown bits as ``BIT<n>``)."""
    out = []
    for bit in range(32):
        if value >> bit & 1:
            try:
                out.append(str(Flag(1 << bit).name))
            except ValueError:
                out.append(f"BIT{bit}")
    return out


def qr2_header_cards() -> list[tuple[str, int, str]]:
    """``(MP_<NAME>, bit, comment)`` cards as written in QR2 FLAGS headers."""
    return [(f"MP_{f.name}", f.value.bit_length() - 1, DESCRIPTIONS[f])
            for f in Flag if f not in QR3_ONLY]


def qr3_header_cards() -> list[tuple[str, str, str]]:
    """``(MSKNnnnn, name, comment)`` cards as written in QR3 FLAGS headers."""
    return [(f"MSKN{f.value.bit_length() - 1:04d}", str(f.name), DESCRIPTIONS[f]) for f in Flag]


def bits_from_header(header: Mapping) -> dict[str, int]:
    """Read the name → bit mapping written in a FLAGS header (QR2 or QR3 style)."""
    out: dict[str, int] = {}
    for key in header:
        if key.startswith("MP_"):
            out[key[3:]] = int(header[key])
        elif key.startswith("MSKN") and key[4:].isdigit():
            out[str(header[key]).strip()] = int(key[4:])
    return out
