"""A baseline that does what the reference (spxquery 0.4.1 drizzle3d) does per frame
(behaviour reference §8.4-8.6): wavelength maps of every pixel through astropy's WAVE-TAB WCS,
every pixel centre through the SIP WCS, the bilinear kernel, a dense (pixels x n_z) spectral
matrix kept whole (min_overlap = 0), and unbuffered ``np.add.at`` accumulation.
Benchmark-only code."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from spxdask.spherex.l2 import L2File


def reference_drizzle_frame(path: str, out_wcs: WCS, out_shape: tuple[int, int], edges: np.ndarray,
                            xy_shrink: float = 0.8) -> np.ndarray:
    n_z = edges.size - 1
    ny, nx = out_shape
    with L2File(path) as l2:
        image, var, flags = l2.image(), l2.variance(), l2.flags().astype(np.uint32)
        zodi = l2.zodi()
        wcs = l2.wcs
        spectral = l2.spectral_wcs()
    image = image - zodi
    iy, ix = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    wl, bw = spectral.pixel_to_world(ix, iy)
    lam, dlam = wl.to_value("um"), bw.to_value("um")
    ra, dec = wcs.all_pix2world(ix.ravel(), iy.ravel(), 0)
    vx, vy = out_wcs.wcs_world2pix(ra, dec, 0)
    ok = np.isfinite(vx) & np.isfinite(vy) & (vx >= -2) & (vx < nx + 2) & (vy >= -2) & (vy < ny + 2)
    idx = np.flatnonzero(ok)
    vx, vy = vx[ok], vy[ok]
    parts = []
    for dx in (0, 1):
        for dy in (0, 1):
            ox, oy = np.floor(vx).astype(int) + dx, np.floor(vy).astype(int) + dy
            w = np.clip(1 - np.abs(vx - (ox + 0.5)), 0, None) * np.clip(1 - np.abs(vy - (oy + 0.5)), 0, None) * xy_shrink**2
            keep = (w > 1e-10) & (ox >= 0) & (ox < nx) & (oy >= 0) & (oy < ny)
            parts.append((idx[keep], oy[keep], ox[keep], w[keep]))
    pix, oy, ox, fxy = (np.concatenate(p) for p in zip(*parts))
    v = var.ravel()[pix]
    good = np.isfinite(lam.ravel()[pix]) & (dlam.ravel()[pix] > 0) & (v > 0)
    pix, oy, ox, fxy = pix[good], oy[good], ox[good], fxy[good]
    uniq, inv = np.unique(pix, return_inverse=True)
    lo = lam.ravel()[uniq] - 0.5 * dlam.ravel()[uniq] * xy_shrink
    hi = lam.ravel()[uniq] + 0.5 * dlam.ravel()[uniq] * xy_shrink
    overlap = np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]), 0, None)
    fz = overlap / (hi - lo)[:, None]
    fz /= np.where(fz.sum(axis=1) > 0, fz.sum(axis=1), 1)[:, None]
    weight = np.minimum(1.0 / var.ravel()[uniq], 1e10)
    total = fxy[:, None] * fz[inv]  # every plane, zero overlaps included (min_overlap = 0)
    wxf = weight[inv][:, None] * total
    zz = np.broadcast_to(np.arange(n_z), total.shape)
    yy = np.broadcast_to(oy[:, None], total.shape)
    xx = np.broadcast_to(ox[:, None], total.shape)
    flux = np.zeros((n_z, ny, nx))
    wsum = np.zeros_like(flux)
    vsum = np.zeros_like(flux)
    count = np.zeros(flux.shape, np.uint16)
    andm = np.full(flux.shape, 0xFFFFFFFF, np.uint32)
    orm = np.zeros(flux.shape, np.uint32)
    data = image.ravel()[pix][:, None]
    np.add.at(flux, (zz, yy, xx), wxf * data)
    np.add.at(wsum, (zz, yy, xx), wxf)
    np.add.at(vsum, (zz, yy, xx), wxf**2 * var.ravel()[pix][:, None])
    np.add.at(count, (zz, yy, xx), 1)
    f = np.broadcast_to(flags.ravel()[pix][:, None], total.shape)
    np.bitwise_and.at(andm, (zz, yy, xx), f)
    np.bitwise_or.at(orm, (zz, yy, xx), f)
    return flux



