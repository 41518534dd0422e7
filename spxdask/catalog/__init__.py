"""The run's light curves and spectra as a HATS catalog (LSDB opens it): one row per source,
nested ``lightcurve`` and ``spectrum`` columns, HEALPix partitions sized by rows, grown in place
as new images arrive (:mod:`.plan` the partitions, :mod:`.nested` one partition's table,
:mod:`.build` the Dask stage, :mod:`.read` fast reads of a few sources through the id index)."""

from .build import CatalogBuild, build_catalog

__all__ = ["CatalogBuild", "build_catalog"]
