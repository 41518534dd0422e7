"""Catalog sources."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from astropy.coordinates import SkyCoord

from ._config import require_position


@dataclass(frozen=True)
class Source:
    """A sky position with an optional identifier (the reference's ``Source``).

    Parameters
    ----------
    ra, dec : float
        Position (deg).
    name : str, optional
        An identifier; a target's ``targetid`` in batch work.
    """

    ra: float
    dec: float
    name: str | None = None

    def __post_init__(self) -> None:
        require_position(self, "ra", "dec")

    def to_skycoord(self) -> SkyCoord:
        return SkyCoord(self.ra, self.dec, unit="deg", frame="icrs")


def sources_frame(sources: pd.DataFrame | Sequence[Source]) -> pd.DataFrame:
    """A (targetid, ra, dec) DataFrame from a DataFrame or a list of :class:`Source`
    (``name`` becomes ``targetid``, kept as a string)."""
    if isinstance(sources, pd.DataFrame):
        missing = {"targetid", "ra", "dec"} - set(sources.columns)
        if missing:
            raise ValueError(f"sources lack column(s) {sorted(missing)}")
        return sources[["targetid", "ra", "dec"]].reset_index(drop=True)
    return pd.DataFrame({"targetid": pd.array([s.name for s in sources], dtype="string"),
                         "ra": [s.ra for s in sources], "dec": [s.dec for s in sources]})
