"""The report's figures, each drawn on its own ``matplotlib.figure.Figure`` (no pyplot, no
backend switch) and returned with the facts it shows, which the page records beside it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .facts import RunFacts

#: sources drawn one by one at most; more are drawn as a density map
MAX_POINTS = 50_000
#: footprints outlined at most (spread over the run)
MAX_FOOTPRINTS = 3_000
#: HEALPix pixels drawn at most in a density map (its order is the finest that keeps to it)
MAX_CELLS = 20_000


def _figure(ncols: int = 1, width: float = 7.0, height: float = 4.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]


def _quality_counts(column: pd.Series) -> dict[str, int]:
    """Measurements per reason listed in a quality column ("": none)."""
    text = column.fillna("").astype(str)
    counts = {"none": int((text == "").sum())}
    for reasons, n in text[text != ""].value_counts().items():
        for reason in str(reasons).split(","):
            counts[reason] = counts.get(reason, 0) + int(n)
    return counts


def _by_detector(frame: pd.DataFrame):
    """(detector, its rows) of a frame with a detector column, by detector."""
    detectors = frame["detector"].to_numpy(int)
    for det in np.unique(detectors):
        yield int(det), frame[detectors == det]


def sky(facts: RunFacts) -> tuple[Figure, dict[str, Any]]:
    """Image footprints by detector over the sources, coloured by their number of measurements."""
    fig, (ax,) = _figure(width=7.0, height=6.0)
    query = facts.query
    step = max(1, -(-len(query) // MAX_FOOTPRINTS))
    drawn = query.iloc[::step]
    for det, rows in _by_detector(drawn):
        for k, footprint in enumerate(rows["footprint"]):
            corners = np.asarray(footprint, float).reshape(-1, 2)
            ring = np.vstack([corners, corners[:1]])
            ax.plot(ring[:, 0], ring[:, 1], color=f"C{det - 1}", lw=0.7, alpha=0.7, label=f"D{det}" if k == 0 else None)
    sources = facts.sources
    density = len(sources) > MAX_POINTS
    healpix: dict[str, Any] = {}
    if len(sources):
        if density:
            healpix = _healpix_density(fig, ax, sources["ra"].to_numpy(float), sources["dec"].to_numpy(float))
        else:
            shown = ax.scatter(sources["ra"], sources["dec"], c=sources["n_obs"], s=6, cmap="viridis", zorder=3)
            fig.colorbar(shown, ax=ax, label="measurements per source")
    ax.invert_xaxis()
    ax.set(xlabel="RA [deg]", ylabel="Dec [deg]", title="Images and sources")
    if len(drawn):
        ax.legend(fontsize="small", ncols=3, loc="upper right")
    per_detector = {f"D{det}": len(rows) for det, rows in _by_detector(query)}
    return fig, {"footprints": per_detector, "footprints_drawn": len(drawn), "sources_drawn": len(sources),
                 "density_map": density, "n_obs_max": int(sources["n_obs"].max()) if len(sources) else 0} | healpix


def _healpix_density(fig: Figure, ax, ra: np.ndarray, dec: np.ndarray) -> dict[str, Any]:
    """Sources per HEALPix pixel, drawn as the pixels themselves, at the finest order (12 at
    most, 0.86') whose occupied pixels number at most :data:`MAX_CELLS`."""
    from cdshealpix.nested import vertices
    from hats.pixel_math.healpix_shim import radec2pix
    from matplotlib.collections import PolyCollection

    order, pixels = 12, np.asarray(radec2pix(12, ra, dec), np.int64)
    cells, counts = np.unique(pixels, return_counts=True)
    while len(cells) > MAX_CELLS and order > 0:  # a nested pixel's parent: its number over 4
        order, pixels = order - 1, np.right_shift(pixels, 2)
        cells, counts = np.unique(pixels, return_counts=True)
    lon, lat = vertices(cells, order)
    shown = PolyCollection(list(np.stack([lon.deg, lat.deg], axis=-1)), array=counts, cmap="magma", zorder=3)
    ax.add_collection(shown)
    ax.autoscale_view()
    fig.colorbar(shown, ax=ax, label=f"sources per HEALPix pixel (order {order}; a sample)")
    return {"healpix_order": order, "healpix_pixels": len(cells), "sources_counted": int(counts.sum())}


def time_coverage(facts: RunFacts) -> tuple[Figure, dict[str, Any]]:
    """Images per day, by detector."""
    fig, (ax,) = _figure(height=3.2)
    mjd = facts.query["mjd"].to_numpy(float)
    counts: list[int] = []
    if mjd.size:
        edges = np.arange(np.floor(mjd.min()), np.floor(mjd.max()) + 2)
        counts = np.histogram(mjd, edges)[0].tolist()
        for det, rows in _by_detector(facts.query):
            ax.hist(rows["mjd"], edges, histtype="step", color=f"C{det - 1}", label=f"D{det}")
        ax.legend(fontsize="small", ncols=6)
    ax.set(xlabel="MJD", ylabel="images per day", title="When the images were taken")
    return fig, {"images": int(mjd.size), "mjd_min": float(mjd.min()) if mjd.size else None,
                 "mjd_max": float(mjd.max()) if mjd.size else None, "days_with_images": int(np.count_nonzero(counts))}


def photometry_health(facts: RunFacts) -> tuple[Figure, dict[str, Any]]:
    """S/N against flux, the PSF fit's χ², quality flags by reason, PSF against aperture flux."""
    fig, axes = _figure(ncols=4, width=15.0, height=3.6)
    rows = facts.photometry
    flux, error = rows["flux_psf"].to_numpy(float), rows["flux_psf_error"].to_numpy(float)
    good = np.isfinite(flux) & np.isfinite(error) & (flux > 0) & (error > 0)
    snr = flux[good] / error[good]
    axes[0].scatter(flux[good], snr, s=2, alpha=0.3, color="C0", rasterized=True)
    axes[0].set(xscale="log" if snr.size else "linear", yscale="log" if snr.size else "linear",
                xlabel="flux_psf [µJy]", ylabel="S/N", title="S/N against flux")
    chi2 = rows["psf_chi2"].to_numpy(float)
    chi2 = chi2[np.isfinite(chi2)]
    axes[1].hist(np.clip(chi2, 0, 10), bins=50, color="C1")
    axes[1].set(xlabel="psf_chi2 (clipped at 10)", ylabel="measurements", title="PSF fit χ²")
    quality = _quality_counts(rows["quality"])
    axes[2].barh(list(quality), list(quality.values()), color="C2")
    axes[2].set(xscale="log" if any(quality.values()) else "linear", xlabel="measurements", title="quality flags")
    total = rows["flux_total"].to_numpy(float)
    both = good & np.isfinite(total) & (total > 0)
    ratio = flux[both] / total[both]
    axes[3].scatter(total[both], ratio, s=2, alpha=0.3, color="C3", rasterized=True)
    axes[3].axhline(1.0, color="0.3", lw=0.8)
    axes[3].set(xscale="log" if ratio.size else "linear", ylim=(0.5, 1.5), xlabel="flux_total [µJy]",
                ylabel="flux_psf / flux_total", title="PSF against aperture")
    return fig, {"rows_sampled": len(rows), "files_sampled": facts.files_sampled,
                 "median_snr": float(np.median(snr)) if snr.size else None,
                 "median_psf_chi2": float(np.median(chi2)) if chi2.size else None, "quality": quality,
                 "median_psf_over_total": float(np.median(ratio)) if ratio.size else None}


def variability(facts: RunFacts) -> tuple[Figure, dict[str, Any]]:
    """The light curves of the most significant variable sources, each normalised by its own
    median per detector so that the spectrum does not hide the variation."""
    shown = facts.variable["targetid"].head(4).tolist() if len(facts.variable) else []
    fig, axes = _figure(ncols=max(1, len(shown)), width=3.8 * max(1, len(shown)), height=3.2)
    rows = facts.lightcurves
    column = "flux_psf" if "flux_psf" in rows and rows["flux_psf"].notna().any() else "flux_total"
    for ax, tid in zip(axes, shown):
        own = rows[rows["targetid"] == tid]
        scale = own.groupby("detector")[column].transform("median")
        ax.errorbar(own["mjd"], own[column] / scale, yerr=own[f"{column}_error"] / scale, fmt="o", ms=3,
                    elinewidth=0.8, color="C0")
        ax.set(xlabel="MJD", ylabel=f"{column} / median of its detector", title=f"{tid}")
    if not shown:
        axes[0].text(0.5, 0.5, "no source flagged variable", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    return fig, {"variable": len(facts.variable), "shown": [str(t) for t in shown],
                 "points": {str(t): int((rows["targetid"] == t).sum()) for t in shown}}


def spectra(facts: RunFacts) -> tuple[Figure, dict[str, Any]]:
    """The channel spectra of the brightest sources (highest median S/N)."""
    fig, (ax,) = _figure(height=3.8)
    shown: list[str] = []
    groups = list(facts.spectra.groupby("targetid", sort=False)) if len(facts.spectra) else []
    for k, (tid, own) in enumerate(groups):
        ax.errorbar(own["wavelength"], own["flux"], yerr=own["flux_error"], fmt="o-", ms=3, lw=0.6, color=f"C{k}",
                    label=str(tid))
        shown.append(str(tid))
    if shown:
        ax.legend(fontsize="small")
        ax.set(yscale="log")
    ax.set(xlabel="wavelength [µm]", ylabel="flux [µJy]", title="The brightest sources' spectra")
    return fig, {"shown": shown, "channels": {t: int((facts.spectra["targetid"].astype(str) == t).sum())
                                              for t in shown}}


def performance(facts: RunFacts) -> tuple[Figure, dict[str, Any]]:
    """Time per stage and the time each image took."""
    fig, axes = _figure(ncols=2, width=11.0, height=3.4)
    stages = {k: float(v) for k, v in (facts.record.get("summary", {}).get("seconds") or {}).items() if k != "total"}
    axes[0].barh(list(stages), list(stages.values()), color="C4")
    axes[0].set(xlabel="seconds", title="time per stage")
    seconds = facts.manifest["seconds"].dropna().to_numpy(float) if len(facts.manifest) else np.empty(0)
    axes[1].hist(seconds, bins=40, color="C5")
    axes[1].set(xlabel="seconds", ylabel="images", title="time per image (photometry task)")
    return fig, {"stages": stages, "images_timed": int(seconds.size),
                 "median_seconds_per_image": float(np.median(seconds)) if seconds.size else None}
