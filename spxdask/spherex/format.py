"""Constants of the SPHEREx Level-2 file format, defined once for the reader and the simulator
(``reference/spherex-l2-format.md``)."""

from __future__ import annotations

N_PIX = 2040  # active pixels per side of every detector
PIXEL_SCALE_ARCSEC = 6.15  # nominal
#: 0-based pixel coordinate of the centre of the active area (both axes).
DETECTOR_CENTRE = (N_PIX - 1) / 2
EXPOSURE_S = 113.5826  # XPOSURE: seconds of one exposure
ELAPSED_S = 118.1873  # TELAPSE: seconds, starting before MJD-BEG

# HDU names
IMAGE, FLAGS, VARIANCE, ZODI = "IMAGE", "FLAGS", "VARIANCE", "ZODI"
PSF, EPSF, WCS_WAVE = "PSF", "EPSF", "WCS-WAVE"  # QR2 PSF cube, QR3 ePSF table, wavelength table
IMAGE_HDUS = (IMAGE, FLAGS, VARIANCE, ZODI)
#: Header keywords every file must carry.
REQUIRED_KEYWORDS = ("OBSID", "DETECTOR", "MJD-BEG", "MJD-END")
