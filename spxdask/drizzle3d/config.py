"""Drizzle3D configuration (the reference's fields and defaults), with YAML/JSON round trips."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._config import Config, require, require_position
from .._io import is_http_url
from ..compat import check_config
from ..spherex.channels import PIXEL_SCALE_ARCSEC
from ..spherex.flags import REFERENCE_BAD_BITS, mask_from_bits

KERNELS = ("square", "bilinear")
WEIGHTINGS = ("background", "ivar")


@dataclass
class Drizzle3DConfig(Config):
    """Where and how to build (λ, y, x) cubes (the reference's fields keep their names and defaults).

    Parameters
    ----------
    center_ra, center_dec : float
        Centre of the box (deg).
    width, height : float
        Size of the box (arcmin).
    detector : int
        1-6; 0: every detector, one cube each.
    xy_shrink : float
        Spatial size of an input pixel's droplet, as a fraction of the pixel (the drizzle's pixfrac).
    z_shrink : float, optional
        Spectral droplet size as a fraction of the pixel's bandwidth; default ``xy_shrink``.
    xy_oversample : float
        Output pixels per native 6.15" pixel.
    z_oversample : float
        Output planes per native channel.
    z_lambda_edges : ndarray, optional
        Custom plane edges (µm), instead of the native channels.
    mjd_range : (float, float), optional
        Only images taken within these MJDs.
    max_images : int
        At most this many images; more stops the query before any download.
    download_workers : int
        Concurrent downloads.
    skip_existing : bool
        The reference's knob, accepted and ignored: cubes are replaced only with ``overwrite``.
    data_mirror : Path, optional
        A local mirror of IRSA's layout: files are read there instead of downloaded.
    subtract_zodi : bool
        Subtract each image's ZODI model, scaled by a fit over background pixels.
    static_zodi : bool
        Subtract the ZODI model as stored, unscaled.
    exclude_flags : list of int
        FLAGS bit numbers whose pixels are left out. Default: the bad bits photometry leaves out
        (``PhotometryConfig().bad_flags``: hot, cold, dead, transient... pixels), not the
        reference's ``[]``, which lets flagged pixels into the cube (a hot pixel of +50 MJy/sr
        biased a simulated cube's sources 4x high). Cube files record the bits in ``EXCLMASK`` /
        ``EXCLBITS``.
    ivar_max : float
        Cap of an input pixel's inverse-variance weight.
    min_overlap : float
        Input pixels overlapping an output pixel by less than this fraction are left out.
    output_dir : Path
        Where the cubes (``drizzle_D<n>.fits``) and the lists of rejected images go.
    overwrite : bool
        Replace existing cubes (otherwise ``FileExistsError`` before any work).
    archive : str, optional
        A local folder (read in place) or fsspec URL (downloaded into ``output_dir/images/``) of
        L2 files; default: the TAP service.
    tap_url : str, optional
        The TAP service (default: the ``spxdask.irsa.tap_url`` setting, IRSA).
    kernel : {"square", "bilinear"}
        "square": exact pixel-footprint overlap (the drizzle algorithm); "bilinear": the
        reference's kernel, for comparison.
    split_every : int
        Fan-in of the sums of partial cubes: on a cluster, each worker adds its partials to
        its running sum ``split_every - 1`` at a time (3: the least memory at about the same
        speed; a sum is as large as the cube's planes its images reach).
    weighting : {"background", "ivar"}
        Each input pixel is weighted by the inverse of a variance, capped at ``ivar_max``: its
        row's median VARIANCE ("background") or its own ("ivar", the reference). A pixel's own
        variance holds the source's photon noise, so "ivar" weights each image's brightest
        source pixels down and biases point-source fluxes low (to 0.4x for bright sources).
    storage_options : dict, optional
        fsspec options of a remote archive, e.g. ``{"anon": True}``.
    archive_index : Path, optional
        Where the archive's index lives; default in ``output_dir`` for a remote archive, in
        the user's cache for a local one (an archive is only ever read).
    """

    center_ra: float
    center_dec: float
    width: float
    height: float
    detector: int = 0
    xy_shrink: float = 0.8
    z_shrink: float | None = None
    xy_oversample: float = 1.0
    z_oversample: float = 1.0
    z_lambda_edges: np.ndarray | None = None
    mjd_range: tuple[float, float] | None = None
    max_images: int = 500
    download_workers: int = 4
    skip_existing: bool = True
    data_mirror: Path | None = None
    subtract_zodi: bool = True
    static_zodi: bool = False
    exclude_flags: list[int] = field(default_factory=lambda: list(REFERENCE_BAD_BITS))
    ivar_max: float = 1e10
    min_overlap: float = 0.0
    output_dir: Path = field(default_factory=lambda: Path("drizzle_output"))
    overwrite: bool = False
    archive: str | None = None
    tap_url: str | None = None
    kernel: str = "square"
    split_every: int = 3
    weighting: str = "background"
    storage_options: dict | None = None
    archive_index: Path | None = None

    BASE_PIXSCALE = PIXEL_SCALE_ARCSEC

    def __post_init__(self) -> None:
        check_config(self)
        need = functools.partial(require, self)
        require_position(self, "center_ra", "center_dec")
        need(0 < self.width <= 600, "width", "must be within (0, 600] arcmin")
        need(0 < self.height <= 600, "height", "must be within (0, 600] arcmin")
        need(self.detector in range(7), "detector", "must be 0 (all) or 1..6")
        need(0 < self.xy_shrink <= 1, "xy_shrink", "must be within (0, 1]")
        need(self.z_shrink is None or 0 < self.z_shrink <= 1, "z_shrink", "must be None or within (0, 1]")
        need(self.xy_oversample > 0, "xy_oversample", "must be > 0")
        need(self.z_oversample > 0, "z_oversample", "must be > 0")
        need(self.ivar_max > 0, "ivar_max", "must be > 0")
        need(self.max_images >= 0, "max_images", "must be >= 0")
        need(self.min_overlap >= 0, "min_overlap", "must be >= 0")
        need(self.kernel in KERNELS, "kernel", f"must be one of {KERNELS}")
        need(self.weighting in WEIGHTINGS, "weighting", f"must be one of {WEIGHTINGS}")
        need(self.tap_url is None or is_http_url(self.tap_url), "tap_url", "must be an http(s) URL")
        need(int(self.split_every) == self.split_every and self.split_every >= 2, "split_every", "must be an integer >= 2")
        need(self.output_nx() >= 1 and self.output_ny() >= 1, "width", "gives an empty output grid")
        if self.mjd_range is not None:
            need(len(self.mjd_range) == 2 and self.mjd_range[0] <= self.mjd_range[1], "mjd_range", "must be (min, max)")
            self.mjd_range = (float(self.mjd_range[0]), float(self.mjd_range[1]))
        if self.z_lambda_edges is not None:
            edges = np.asarray(self.z_lambda_edges, float)
            need(edges.ndim == 1 and edges.size >= 2 and bool(np.all(np.diff(edges) > 0)), "z_lambda_edges",
                 "must be >= 2 strictly increasing edges (micron)")
            self.z_lambda_edges = edges
        try:
            mask_from_bits(self.exclude_flags)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Drizzle3DConfig.exclude_flags must be bit numbers 0..31, got {self.exclude_flags!r}") from exc
        self.output_dir = Path(self.output_dir)
        if self.archive_index is not None:
            self.archive_index = Path(self.archive_index)
        require(self, self.output_dir.is_dir() or not self.output_dir.exists(), "output_dir",
                "is a file; give a folder (made when missing)")
        self.data_mirror = Path(self.data_mirror) if self.data_mirror else None

    # -- derived values (reference names) --------------------------------------------------
    @property
    def pixscale(self) -> float:
        """Output pixel scale (arcsec)."""
        return self.BASE_PIXSCALE / self.xy_oversample

    def output_nx(self) -> int:
        return int(self.width * 60 / self.pixscale)

    def output_ny(self) -> int:
        return int(self.height * 60 / self.pixscale)

    def effective_z_shrink(self) -> float:
        """Spectral droplet shrink (``z_shrink`` if set, else ``xy_shrink``)."""
        return self.z_shrink if self.z_shrink is not None else self.xy_shrink

    def spatial_radius_deg(self) -> float:
        """Half-diagonal of the output region (deg)."""
        return math.hypot(self.width, self.height) / 2 / 60

    @property
    def exclude_mask(self) -> int:
        return mask_from_bits(self.exclude_flags)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Drizzle3DConfig) and json.dumps(self.to_dict()) == json.dumps(other.to_dict())



