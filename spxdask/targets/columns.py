"""Which columns of an input catalog are the id, ra and dec, and which others are carried."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .check import CatalogError

#: Id columns tried in turn (case-insensitive): spxdask's, Gaia's, the Legacy Surveys', any.
ID_NAMES = ("targetid", "source_id", "objid", "id")
RA_NAMES = ("ra", "ra_deg", "raj2000", "ra_icrs")
DEC_NAMES = ("dec", "dec_deg", "dej2000", "decj2000", "dec_icrs")
#: Columns kept with the targets when present (lower-cased): motions and epochs, shapes.
CARRIED = ("pmra", "pmdec", "parallax", "ref_epoch", "type", "shape_r", "shape_e1", "shape_e2", "sersic")


@dataclass(frozen=True)
class Columns:
    """The catalog's own names of the columns used.

    Parameters
    ----------
    id : str or None
        The id column (None for a neighbour catalog).
    ra, dec : str
        The position columns (degrees).
    carried : tuple of str
        Columns kept with the rows (read as ``name.lower()``).
    """

    id: str | None
    ra: str
    dec: str
    carried: tuple[str, ...] = ()

    def read(self) -> list[str]:
        """The columns to read, in the catalog's spelling."""
        return [c for c in (self.id, self.ra, self.dec) if c is not None] + list(self.carried)


def resolve(names: Sequence[str], where: str, *, id_column: str | None = None, ra_column: str | None = None,
            dec_column: str | None = None, need_id: bool = True, preferred: Sequence[str] = ()) -> Columns:
    """Map a catalog's column ``names``: explicit names win, then ``preferred`` (a HATS
    catalog's own ra / dec columns), then the usual names (:data:`ID_NAMES`, ...).

    Parameters
    ----------
    names : sequence of str
        The catalog's columns.
    where : str
        The catalog, for the messages.
    id_column, ra_column, dec_column : str, optional
        Explicit names (matched without regard to case).
    need_id : bool
        Whether an id column is needed (not for a neighbour catalog).
    preferred : sequence of str
        (ra, dec) names tried before the usual ones.

    Returns
    -------
    Columns

    Raises
    ------
    CatalogError
        Naming ``where`` (the file) when a column is missing.
    """
    lower = {n.strip().lower(): n for n in names}

    def pick(label: str, option: str, explicit: str | None, usual: Sequence[str]) -> str:
        if explicit is not None:
            if explicit.strip().lower() in lower:
                return lower[explicit.strip().lower()]
            raise CatalogError(f"{where}: no column {explicit!r} ({option}); found {list(names)}")
        for name in usual:
            if name.lower() in lower:
                return lower[name.lower()]
        raise CatalogError(f"{where}: missing column(s) ['{label}']; name it with {option} (tried "
                           f"{', '.join(dict.fromkeys(usual))}); found {list(names)}")

    ra = pick("ra", "ra_column", ra_column, [*preferred[:1], *RA_NAMES])
    dec = pick("dec", "dec_column", dec_column, [*preferred[1:2], *DEC_NAMES])
    ident = pick("targetid", "id_column", id_column, ID_NAMES) if need_id else None
    carried = tuple(lower[c] for c in CARRIED if c in lower and lower[c] not in (ident, ra, dec))
    return Columns(ident, ra, dec, carried)
