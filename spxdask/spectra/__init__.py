"""Per-source channel spectra and a variability test from light-curve rows: the binning and
the smooth-spectrum fit are numpy kernels (:mod:`.binning`, :mod:`.variability`,
:mod:`.kernel`); the catalog stage (:mod:`spxdask.catalog`) runs them once per partition."""

from .binning import SPECTRUM_COLUMNS, assign_channels, channel_spectra
from .config import SpectraConfig
from .kernel import SOURCE_COLUMNS, spectra_of

__all__ = ["SOURCE_COLUMNS", "SPECTRUM_COLUMNS", "SpectraConfig", "assign_channels", "channel_spectra", "spectra_of"]
