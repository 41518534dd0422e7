"""The spectra of a set of sources from their light-curve rows (pandas / numpy, no Dask)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .binning import assign_channels, channel_spectra
from .config import SpectraConfig
from .variability import p_value, smooth_fit

#: Columns of ``sources.parquet``, in order.
SOURCE_COLUMNS = ("targetid", "ra", "dec", "n_obs", "n_used", "n_channels", "median_snr", "chi2_dof", "dof",
                  "p_value", "variable")
#: The light-curve columns the spectra read (besides the flux pair chosen by the config).
INPUT_COLUMNS = ("targetid", "ra", "dec", "detector", "wavelength", "quality")


def resolve(rows: pd.DataFrame, config: SpectraConfig) -> tuple[str, str]:
    """The (flux, error) columns of ``rows`` that ``config`` takes (``"auto"``: the PSF flux
    when any row has one)."""
    return config.resolve_flux(rows.columns, psf_measured="flux_psf" in rows and bool(rows["flux_psf"].notna().any()))


def usable(rows: pd.DataFrame, config: SpectraConfig) -> np.ndarray:
    """Measurements that enter the spectra: finite flux, finite positive error and
    wavelength, and no ``quality`` reason among ``config.exclude_quality``."""
    flux, error = resolve(rows, config)
    f, e = rows[flux].to_numpy(float), rows[error].to_numpy(float)
    lam = rows["wavelength"].to_numpy(float)
    ok = np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(lam) & (lam > 0)
    if config.exclude_quality:
        codes, texts = pd.factorize(rows["quality"].fillna("").astype(str))  # a few distinct texts
        bad = set(config.exclude_quality)
        excluded = np.array([not bad.isdisjoint(text.split(",")) for text in texts], bool)
        ok &= ~excluded[codes]
    return ok


def spectra_of(rows: pd.DataFrame, config: SpectraConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Channel spectra and per-source summaries of light-curve rows.

    Parameters
    ----------
    rows : DataFrame
        Light-curve rows (any order) with :data:`INPUT_COLUMNS` and the flux / error pair of
        ``config.flux_column``.
    config : SpectraConfig, optional

    Returns
    -------
    spectra : DataFrame
        :data:`~spxdask.spectra.binning.SPECTRUM_COLUMNS`, sorted by targetid then channel
        wavelength; channels without a usable measurement are absent.
    sources : DataFrame
        :data:`SOURCE_COLUMNS`, one row per source in ``rows`` (also when none of its
        measurements is usable: then ``n_used`` = 0 and the test columns are NaN / False).
    """
    config = config or SpectraConfig()
    flux_col, error_col = resolve(rows, config)
    targetids, first, source = np.unique(rows["targetid"].to_numpy(), return_index=True, return_inverse=True)
    n = targetids.size
    ok = usable(rows, config)
    good = np.flatnonzero(ok)
    s = source[good]
    wavelength = rows["wavelength"].to_numpy(float)[good]
    flux = rows[flux_col].to_numpy(float)[good]
    error = rows[error_col].to_numpy(float)[good]
    channel = assign_channels(rows["detector"].to_numpy()[good], wavelength)
    spectra = channel_spectra(s, targetids, channel, wavelength, flux, error)
    chi2, dof = smooth_fit(s, n, wavelength, flux, error, knot_spacing=config.knot_spacing)
    p = p_value(chi2, dof)
    snr = pd.Series(flux / error).groupby(s).median().reindex(range(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_dof = np.where(dof > 0, chi2 / np.maximum(dof, 1), np.nan)
    sources = pd.DataFrame({
        "targetid": targetids,
        "ra": rows["ra"].to_numpy(float)[first],
        "dec": rows["dec"].to_numpy(float)[first],
        "n_obs": np.bincount(source, minlength=n).astype(np.int32),
        "n_used": np.bincount(s, minlength=n).astype(np.int32),
        "n_channels": np.bincount(np.searchsorted(targetids, spectra["targetid"].to_numpy()), minlength=n)
        .astype(np.int16),
        "median_snr": snr.to_numpy(float),
        "chi2_dof": chi2_dof,
        "dof": dof.astype(np.int32),
        "p_value": p,
        "variable": np.nan_to_num(p, nan=1.0) < config.false_positive_rate,
    }, columns=list(SOURCE_COLUMNS))
    return spectra, sources
