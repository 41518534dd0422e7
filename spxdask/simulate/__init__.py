"""A simulator of faithful SPHEREx L2 files with injected truth: the sky and survey plan
(:mod:`.sky`), the physical models (:mod:`.models`), the file writer (:mod:`.writer`) and the
Dask driver that writes a whole survey (:mod:`.driver`). The file format itself is defined in
:mod:`spxdask.spherex`, which the reader uses too."""

from .config import QR_VERSIONS, SimConfig
from .driver import SimulatedSky, simulate_sky
from .models import psf_pixels, psf_sigma, wave_table, zone_grid
from .sky import ImageSpec, make_catalog, plan_survey, true_flux, true_positions
from .writer import render_image, write_epsf_calibration, write_image

__all__ = ["QR_VERSIONS", "ImageSpec", "SimConfig", "SimulatedSky", "make_catalog", "plan_survey", "psf_pixels",
           "psf_sigma", "render_image", "simulate_sky", "true_flux", "true_positions", "wave_table",
           "write_epsf_calibration", "write_image", "zone_grid"]
