"""How the catalog stage makes channel spectra and the variability test."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow.parquet as pq

from .._config import Config, require
from ..photometry import QUALITY_REASONS

FLUX_CHOICES = ("auto", "flux_model", "flux_psf", "flux_total", "flux")


@dataclass
class SpectraConfig(Config):
    """How measurements become channel spectra and a variability test.

    Parameters
    ----------
    flux_column : {"auto", "flux_model", "flux_psf", "flux_total", "flux"}
        The flux measured per image that enters the spectra (its error column is
        ``<flux_column>_error``). ``"auto"``: the model-fit flux when the run measured it
        (``PhotometryConfig.psf_fit``; each source's profile through the PSF, the PSF flux for
        points), else the aperture-corrected total ``flux_total``.
        ``"flux"`` is the raw aperture flux, which misses the light outside the aperture.
    exclude_quality : list of str
        Measurements whose ``quality`` lists any of these reasons are left out of the spectra
        and of the variability test (they are still counted in ``n_obs``). Default: ``edge``
        (aperture cut by the image edge) and ``no_background``. ``bad_pixels`` is kept: the
        aperture correction restores the light of masked pixels.
    knot_spacing : float
        Knot spacing, in ln(λ), of the cubic B-spline that is the smooth spectral model of the
        variability test. 0.1 is four channels of SPHEREx's R ≈ 40 detectors: smooth enough
        that a flux change between the epochs at which neighbouring channels were observed
        cannot be absorbed, flexible enough for steep and curved spectra.
    false_positive_rate : float
        A source is ``variable`` when the p-value of its χ² about the smooth model is below
        this (the fraction of constant sources flagged when the errors are right).
    """

    flux_column: str = "auto"
    exclude_quality: list[str] = field(default_factory=lambda: ["edge", "no_background"])
    knot_spacing: float = 0.1
    false_positive_rate: float = 1e-3

    def __post_init__(self) -> None:
        need = functools.partial(require, self)
        need(self.flux_column in FLUX_CHOICES, "flux_column", f"must be one of {FLUX_CHOICES}")
        self.exclude_quality = list(self.exclude_quality)
        need(set(self.exclude_quality) <= set(QUALITY_REASONS), "exclude_quality",
             f"must list reasons among {QUALITY_REASONS}")
        need(0.01 <= self.knot_spacing <= 2.0, "knot_spacing", "must be within [0.01, 2] (in ln wavelength)")
        need(0.0 < self.false_positive_rate < 1.0, "false_positive_rate", "must be within (0, 1)")

    def resolve_flux(self, columns, *, psf_measured: bool = True) -> tuple[str, str]:
        """The (flux, error) column pair to use among ``columns``.

        Parameters
        ----------
        columns : sequence of str
            The columns of the measurements.
        psf_measured : bool
            Whether the PSF columns hold measurements (they are NaN when the PSF fit was off).

        Returns
        -------
        flux, error : str
        """
        name = self.flux_column
        if name == "auto":
            fitted = [c for c in ("flux_model", "flux_psf") if c in columns and psf_measured]
            name = fitted[0] if fitted else "flux_total"
        if name not in columns or f"{name}_error" not in columns:
            raise ValueError(f"SpectraConfig.flux_column: the measurements have no {name!r} / {name}_error columns")
        return name, f"{name}_error"


def chosen_flux(config: SpectraConfig, files: Sequence[Path]) -> SpectraConfig:
    """``config`` with its flux column resolved for a whole run, so every partition takes the same one.

    Parameters
    ----------
    config : SpectraConfig
    files : sequence of Path
        The run's per-image files (``"auto"``: the PSF flux when any of them has a value, read
        from the footers' null counts).

    Returns
    -------
    SpectraConfig
    """
    names = pq.read_schema(files[0]).names
    measured = "flux_psf" in names and any(_has_values(f, "flux_psf") for f in files)
    if config.flux_column in ("flux_model", "flux_psf") and not measured:
        raise ValueError(f"SpectraConfig.flux_column: the run has no {config.flux_column!r} values (measured with "
                         "PhotometryConfig.psf_fit=False); take 'auto' or 'flux_total'")
    return replace(config, flux_column=config.resolve_flux(names, psf_measured=measured)[0])


def _has_values(path: Path, column: str) -> bool:
    """Whether a Parquet file's ``column`` holds a non-null value (footer statistics, or the
    column itself when a row group has none)."""
    meta = pq.read_metadata(path)
    index = meta.schema.names.index(column)
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(index).statistics
        if stats is None or not stats.has_null_count:
            values = pq.read_table(path, columns=[column]).column(0)
            return values.null_count < len(values)
        if stats.null_count < meta.row_group(rg).num_rows:
            return True
    return False
