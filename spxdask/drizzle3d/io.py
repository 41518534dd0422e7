"""The FITS file of a cube: the reference's 7 HDUs (PRIMARY, SCI, VARIANCE, AND_MASK, OR_MASK,
COUNT, WAVELENGTH), in its order, then INPUTS (the images that went into it)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .. import __version__
from .._io import atomic_path
from .accumulate import InputFrame
from .config import Drizzle3DConfig
from .cube import DrizzleCube, correlation_columns
from .spectral import ZGrid


def _cube_wcs(cube: DrizzleCube) -> fits.Header:
    h = fits.Header()
    w = cube.wcs.wcs
    h["WCSAXES"] = 3
    for i in (0, 1):
        h[f"CTYPE{i + 1}"] = w.ctype[i]
        h[f"CRVAL{i + 1}"] = float(w.crval[i])
        h[f"CRPIX{i + 1}"] = float(w.crpix[i])
        h[f"CDELT{i + 1}"] = float(w.cdelt[i])
        h[f"CUNIT{i + 1}"] = "deg"
    z = cube.zgrid
    h["CTYPE3"] = "WAVE"
    h["CRVAL3"] = float(z.centers[0] * 1e-6)
    h["CRPIX3"] = 1.0
    h["CDELT3"] = float(np.mean(z.widths) * 1e-6)
    h["CUNIT3"] = "m"
    h["RADESYS"] = "ICRS"
    h["COMMENT"] = "Approximate linear spectral WCS; exact bins in the WAVELENGTH extension"
    return h


def save_cube(cube: DrizzleCube, path: str | Path, overwrite: bool = False) -> Path:
    """Write the cube as FITS (the reference's 7 HDUs, then INPUTS), atomically.

    Parameters
    ----------
    cube : DrizzleCube
    path : path
        The FITS file.
    overwrite : bool
        Replace an existing file (otherwise ``FileExistsError``).

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (set overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fits.HDUList(cube_hdus(cube)).writeto(tmp)
    return path


def cube_hdus(cube: DrizzleCube) -> list:
    """The HDUs of a cube file (the reference's 7, then INPUTS). The WAVELENGTH table carries, per plane, the correlation of
    neighbouring voxels' noise (``CORR_<dy><dx>`` columns, :data:`~.accumulate.OFFSETS`); the
    primary header the FLAGS bits kept out (``EXCLMASK``, ``EXCLBITS``)."""
    config = cube.config
    z = cube.zgrid
    n_z, ny, nx = cube.flux_weighted.shape
    primary = fits.PrimaryHDU()
    p = primary.header
    for key, value, comment in (
            ("TELESCOP", "SPHEREx", ""), ("INSTRUME", "SPHEREx", ""), ("FILETYPE", "DRIZZLED_CUBE", ""),
            ("DETECTOR", cube.detector, "detector 1-6"), ("N_INPUTS", cube.n_inputs, "input images"),
            ("N_REJECT", cube.n_rejected, "inputs that contributed nothing"),
            ("XYSHRINK", config.xy_shrink, "spatial pixfrac"), ("ZSHRINK", config.effective_z_shrink(), "spectral shrink"),
            ("XYOVRSM", config.xy_oversample, ""), ("ZOVRSM", config.z_oversample, ""),
            ("PIXSCALE", config.BASE_PIXSCALE, "[arcsec] native pixel scale"),
            ("EPIXSCLE", config.pixscale, "[arcsec] output pixel scale"), ("KERNEL", config.kernel, "spatial kernel"),
            ("BUNIT", "MJy/sr", ""), ("DRIZVER", __version__, "spxdask version"),
            ("DRIZDATE", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "UTC"),
            ("BAND_NM", f"D{cube.detector}", ""), ("LAM_MIN", float(z.edges[0]), "[um]"),
            ("LAM_MAX", float(z.edges[-1]), "[um]"), ("NZ", n_z, ""), ("NX", nx, ""), ("NY", ny, ""),
            ("EXCLMASK", config.exclude_mask, "FLAGS bits whose pixels were left out"),
            ("EXCLBITS", ",".join(map(str, sorted(config.exclude_flags))) or "none", "their bit numbers"),
            ("WEIGHTNG", config.weighting, "the variance the weights are the inverse of"),
            ("IVARMAX", config.ivar_max, "cap of a pixel's weight"), ("MINOVRLP", config.min_overlap, "")):
        p[key] = (value, comment)
    wcs = _cube_wcs(cube)
    sci = fits.ImageHDU(cube.sci, header=wcs.copy(), name="SCI")
    sci.header["BUNIT"] = "MJy/sr"
    var = fits.ImageHDU(cube.variance, header=wcs.copy(), name="VARIANCE")
    var.header["BUNIT"] = "MJy^2/sr^2"
    and_hdu = fits.ImageHDU(cube.final_and_mask, name="AND_MASK")
    or_hdu = fits.ImageHDU(cube.or_mask.astype(np.uint32), name="OR_MASK")
    count = fits.ImageHDU(cube.count_map.astype(np.int32), name="COUNT")
    count.header["COMMENT"] = "number of distinct input images contributing to each voxel"
    table = fits.BinTableHDU.from_columns([
        fits.Column("INDEX", "I", array=np.arange(n_z)),
        fits.Column("LAMBDA", "D", unit="um", array=z.centers),
        fits.Column("LAMBDA_MIN", "D", unit="um", array=z.edges[:-1]),
        fits.Column("LAMBDA_MAX", "D", unit="um", array=z.edges[1:]),
        fits.Column("DLAMBDA", "D", unit="um", array=z.widths),
        fits.Column("NU", "D", unit="Hz", array=z.frequencies()),
        fits.Column("DNU", "D", unit="Hz", array=z.delta_nu()),
        fits.Column("R_EFF", "E", array=z.resolving_power()),
        fits.Column("N_INPUT_SC", "J", array=cube.plane_inputs if cube.plane_inputs is not None else np.zeros(n_z)),
        *(fits.Column(name, "E", array=rho) for name, rho in zip(correlation_columns(), cube.correlation.T)),
    ], name="WAVELENGTH")
    return [primary, sci, var, and_hdu, or_hdu, count, table, inputs_hdu(cube.inputs)]


def inputs_hdu(inputs: list) -> fits.BinTableHDU:
    """The ``INPUTS`` table: one row per image that went into the cube (OBS_ID, DETECTOR,
    VERSION, WEIGHT: its Σ w over the voxels, WEIGHT_FRAC: its share, FILE: where it was read,
    without any query string)."""
    weight = np.array([f.weight for f in inputs], float)
    total = weight.sum() if weight.size else 1.0
    table = fits.BinTableHDU.from_columns([
        fits.Column("OBS_ID", "A32", array=np.array([f.obs_id for f in inputs], dtype="U32")),
        fits.Column("DETECTOR", "I", array=np.array([f.detector for f in inputs], np.int16)),
        fits.Column("VERSION", "A16", array=np.array([f.version for f in inputs], dtype="U16")),
        fits.Column("WEIGHT", "D", array=weight),
        fits.Column("WEIGHT_FRAC", "D", array=weight / total),
        fits.Column("FILE", f"A{max([len(_plain(f.file)) for f in inputs] + [1])}",
                    array=np.array([_plain(f.file) for f in inputs], dtype=str)),
    ], name="INPUTS")
    table.header["COMMENT"] = "the input images, as they are to be cited; FILE is where each was read"
    return table


def _plain(location: str) -> str:
    """A file's location without a URL's query string (where signed URLs keep their keys)."""
    return location.split("?", 1)[0] if "://" in location else location


def as_loaded(cube: DrizzleCube) -> dict:
    """The cube as :func:`load_cube` returns it from its file (without writing one).

    Parameters
    ----------
    cube : DrizzleCube

    Returns
    -------
    dict
    """
    if cube.stored is not None:
        return {key: cube[key] for key in cube.KEYS}
    hdus = cube_hdus(cube)
    return {"header": hdus[0].header, "sci": hdus[1].data, "variance": hdus[2].data,
            "and_mask": hdus[3].data, "or_mask": hdus[4].data, "count": hdus[5].data,
            "wavelength": hdus[6].data, "sci_header": hdus[1].header}


def load_cube(path: str | Path) -> DrizzleCube:
    """A cube from its FITS file (reference name).

    Parameters
    ----------
    path : path
        A file written by :func:`save_cube`.

    Returns
    -------
    DrizzleCube
        Its planes as sums of weight 1 (the file keeps no weights), its masks, counts, grid,
        config and provenance counts; it also answers the reference's dict keys: ``header``
        (PRIMARY), ``sci``, ``variance``, ``and_mask``, ``or_mask``, ``count``, ``wavelength``
        (a FITS record array) and ``sci_header``.
    """
    with fits.open(path) as h:
        primary, sci_header = h[0].header.copy(), h["SCI"].header.copy()
        sci, variance = h["SCI"].data.astype(np.float64), h["VARIANCE"].data.astype(np.float64)
        and_mask, or_mask = h["AND_MASK"].data.astype(np.uint32), h["OR_MASK"].data.astype(np.uint32)
        count, table = h["COUNT"].data.astype(np.int32), h["WAVELENGTH"].data.copy()
        inputs = [InputFrame(str(r["OBS_ID"]), int(r["DETECTOR"]), str(r["VERSION"]), float(r["WEIGHT"]), str(r["FILE"]))
                  for r in (h["INPUTS"].data if "INPUTS" in h and h["INPUTS"].data is not None else [])]
    filled = np.isfinite(sci)
    bits = str(primary.get("EXCLBITS", "none"))
    ny, nx = sci.shape[1:]
    pixscale = float(primary["EPIXSCLE"])
    config = Drizzle3DConfig(
        center_ra=float(sci_header["CRVAL1"]), center_dec=float(sci_header["CRVAL2"]), width=nx * pixscale / 60,
        height=ny * pixscale / 60, detector=int(primary["DETECTOR"]), xy_shrink=float(primary["XYSHRINK"]),
        z_shrink=float(primary["ZSHRINK"]), xy_oversample=float(primary["XYOVRSM"]),
        z_oversample=float(primary["ZOVRSM"]), kernel=str(primary["KERNEL"]),
        exclude_flags=[] if bits == "none" else [int(b) for b in bits.split(",")],
        # cubes written before these were recorded: the defaults of their day
        weighting=str(primary.get("WEIGHTNG", "background")), ivar_max=float(primary.get("IVARMAX", 1e10)),
        min_overlap=float(primary.get("MINOVRLP", 0.0)))
    return DrizzleCube(
        WCS(sci_header).celestial, pixscale, ZGrid.from_edges(np.append(table["LAMBDA_MIN"], table["LAMBDA_MAX"][-1])),
        np.where(filled, sci, 0.0), filled.astype(np.float64), np.where(filled, variance, 0.0), count, and_mask,
        or_mask, config, int(primary["DETECTOR"]), n_inputs=int(primary["N_INPUTS"]),
        n_rejected=int(primary["N_REJECT"]), plane_inputs=np.asarray(table["N_INPUT_SC"], np.int32), inputs=inputs,
        stored={"header": primary, "sci_header": sci_header, "wavelength": table})
