"""The input catalogs (the targets, and the neighbours fitted with them): read in any format,
laid out by HEALPix, and read per image.

A flat file (CSV, Parquet file or folder, FITS binary table, VOTable) is checked and written,
in pieces, into a HATS catalog cached beside the run (:mod:`.layout`); a HATS catalog or an
``lsdb.Catalog`` is used as it is. Each photometry task then reads only the HEALPix pixels its
footprint touches (:class:`~.table.TargetTable`), so no process holds the whole catalog.
"""

from .check import CatalogError
from .columns import Columns, resolve
from .open import load_catalog, load_neighbours, open_targets
from .table import MemoryTargets, TargetTable

__all__ = ["CatalogError", "Columns", "MemoryTargets", "TargetTable", "load_catalog", "load_neighbours",
           "open_targets", "resolve"]
