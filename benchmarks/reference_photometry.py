"""A baseline that does what the reference serial package (spxquery 0.4.1) does per image:
read and convert the full arrays, repair variance, subtract the fitted zodi, then loop over
sources in Python: a 50-px window background with sigma clipping and a photutils exact
aperture on a small cut-out (behaviour reference §4-§5). Benchmark-only code."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from photutils.aperture import CircularAperture, aperture_photometry

from spxdask.spherex.units import UJY_ARCSEC2_PER_MJY_SR

BAD = 708295
SOURCE = 1 << 21


def _clip(v: np.ndarray, sigma: float = 3.0, maxiters: int = 3) -> tuple[float, float]:
    for _ in range(maxiters):
        mean, std = v.mean(), v.std()
        keep = np.abs(v - mean) <= sigma * std
        if std == 0 or keep.all():
            break
        v = v[keep]
    return float(np.median(v)), float(v.std())


def reference_measure(path: str, catalog: pd.DataFrame, window: int = 50) -> pd.DataFrame:
    with fits.open(path) as h:
        header = h["IMAGE"].header
        image = h["IMAGE"].data.astype(np.float32) * UJY_ARCSEC2_PER_MJY_SR
        flags = h["FLAGS"].data.astype(np.int32)
        variance = h["VARIANCE"].data.astype(np.float32) * UJY_ARCSEC2_PER_MJY_SR**2
        zodi = h["ZODI"].data.astype(np.float32) * UJY_ARCSEC2_PER_MJY_SR
    bad_var = ~np.isfinite(variance)
    variance[bad_var] = np.median(variance[~bad_var & (variance > 0)])
    strict = (flags & (BAD | SOURCE)) == 0
    relaxed = (flags & BAD) == 0
    ok = strict & (zodi != 0) & (variance > 0)
    w = 1.0 / variance[ok]
    s = float(np.sum(w * image[ok] * zodi[ok]) / np.sum(w * zodi[ok] ** 2)) if ok.mean() >= 0.5 else 1.0
    s = s if 0.0 < s <= 10.0 else 1.0
    image = image - s * zodi
    error = np.sqrt(variance)
    wcs = WCS(header)
    scale = math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
    r = header["PSF_FWHM"] / scale * 2.5 / 2
    x, y = wcs.all_world2pix(catalog["ra"].to_numpy(), catalog["dec"].to_numpy(), 0)
    margin = max(1.5, 5.0, window // 2 + 1)
    ny, nx = image.shape
    rows = []
    for tid, xi, yi in zip(catalog["targetid"], x, y):
        if not (margin <= xi < nx - margin and margin <= yi < ny - margin):
            continue
        y0, y1 = int(math.floor(yi - window / 2)), int(math.ceil(yi + window / 2))
        x0, x1 = int(math.floor(xi - window / 2)), int(math.ceil(xi + window / 2))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        far = np.hypot(xx - xi, yy - yi) > r + 0.707
        use = strict[y0:y1, x0:x1] & far
        if use.sum() < 10:
            use = relaxed[y0:y1, x0:x1] & far
        if use.sum() < 10:
            continue
        bg, std = _clip(image[y0:y1, x0:x1][use])
        ix, iy, ri = int(round(xi)), int(round(yi)), int(math.ceil(r)) + 1
        sl = (slice(iy - ri - 1, iy + ri + 2), slice(ix - ri - 1, ix + ri + 2))
        ap = CircularAperture((xi - (ix - ri - 1), yi - (iy - ri - 1)), r)
        t = aperture_photometry(image[sl], ap, error=error[sl])
        area = math.pi * r * r
        net = float(t["aperture_sum"][0]) - bg * area
        err = math.hypot(float(t["aperture_sum_err"][0]), std / math.sqrt(use.sum()) * area)
        rows.append((tid, net * scale**2, err * scale**2))
    return pd.DataFrame(rows, columns=["targetid", "flux", "flux_error"])
