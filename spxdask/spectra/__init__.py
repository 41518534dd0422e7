"""Per-source channel spectra and a variability test, from the light-curve store: the binning
and the smooth-spectrum fit are numpy kernels (:mod:`.binning`, :mod:`.variability`,
:mod:`.kernel`); :mod:`.stage` runs them as one Dask task per store partition."""

from .binning import SPECTRUM_COLUMNS, assign_channels, channel_spectra
from .config import SpectraConfig
from .kernel import SOURCE_COLUMNS, spectra_of
from .stage import build_spectra, read_spectra, read_spectrum

__all__ = ["SOURCE_COLUMNS", "SPECTRUM_COLUMNS", "SpectraConfig", "assign_channels", "build_spectra",
           "channel_spectra", "read_spectra", "read_spectrum", "spectra_of"]
