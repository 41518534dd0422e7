"""Per-source channel spectra and a variability test from light-curve rows: the binning and
the smooth-spectrum fit are numpy kernels (:mod:`.binning`, :mod:`.variability`,
:mod:`.compute`); the catalog stage (:mod:`spxdask.catalog`) runs them once per partition."""

from .binning import SPECTRUM_COLUMNS, assign_channels, channel_spectra
from .compute import SOURCE_COLUMNS, spectra_of
from .config import SpectraConfig

__all__ = ["SOURCE_COLUMNS", "SPECTRUM_COLUMNS", "SpectraConfig", "assign_channels", "channel_spectra", "spectra_of"]
