"""The run's light curves and spectra as a HATS catalog (LSDB opens it): one row per source,
nested ``lightcurve`` and ``spectrum`` columns, HEALPix partitions sized by rows, grown in place
as new images arrive.

:mod:`.plan` the partitions, :mod:`.update` what a build keeps, grows and writes, :mod:`.tasks`
the task bodies, :mod:`.build` the Dask stage, :mod:`.versions` the versions on disk,
:mod:`.metadata` the HATS metadata, :mod:`.nested` one partition's table, :mod:`.read` the
readers, :mod:`.export` ``sources.parquet`` and the per-source CSVs."""

from .build import PARTITION_ROWS, CatalogBuild, build_catalog
from .read import read_lightcurve, read_lightcurves, read_spectra, read_spectrum

__all__ = ["PARTITION_ROWS", "CatalogBuild", "build_catalog", "read_lightcurve", "read_lightcurves", "read_spectra",
           "read_spectrum"]
