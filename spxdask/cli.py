"""The ``spxdask`` command: demo, simulate, index, query, batch, drizzle, lightcurve, spectrum, report, info."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._io import atomic_path
from .batch.plot import VIEWS
from .spherex import channels


def _bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(channels.parse_band(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _source_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--archive", help="local folder or fsspec URL of L2 files (IRSA layout)")
    src.add_argument("--tap", help="TAP service URL (e.g. https://irsa.ipac.caltech.edu/TAP)")
    p.add_argument("--index", type=Path, help="the archive's index file (default: the run folder for a URL, the "
                                              "user cache for a folder; the archive is only read)")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    p.add_argument("--gateway", action="store_true", help="run on Dask Gateway (see the spxdask.gateway settings)")
    p.add_argument("--dashboard-address", metavar="HOST:PORT",
                   help="where a local cluster's dashboard listens (default 127.0.0.1:8787, loopback only; "
                        "0.0.0.0:8787 exposes it to the network)")


class _CancelRace(logging.Filter):
    """Drops the NameError that distributed's ``sync`` logs when Ctrl-C lands before the coroutine
    it waits for has started (its cancel callback reads a variable not yet bound, distributed
    2026.8): the interrupt itself is handled, and a traceback is not what the user should see."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, NameError) and "'future'" in str(error))


@contextlib.contextmanager
def _client(args: argparse.Namespace):
    from .cluster import get_client

    # The worker processes of a local cluster start with Ctrl-C ignored (an ignored signal stays
    # ignored across their exec): the terminal sends it to every process of the group, and this
    # one alone answers it, stopping them, so an interrupt prints one line, not a traceback per
    # worker.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        client = get_client(scheduler=getattr(args, "scheduler", None), gateway=getattr(args, "gateway", False),
                            dashboard_address=getattr(args, "dashboard_address", None), log_level=logging.ERROR)
    finally:
        signal.signal(signal.SIGINT, previous)
    tornado, race = logging.getLogger("tornado.application"), _CancelRace()
    tornado.addFilter(race)
    try:
        yield client
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None and not getattr(args, "scheduler", None):
            cluster.close()
        tornado.removeFilter(race)


# -- simulate / demo -------------------------------------------------------------------------
def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import SimConfig, simulate_sky

    config = SimConfig(n_images=args.images, size=args.size, n_sources=args.sources, seed=args.seed,
                    layout=args.layout, center=tuple(args.center), radius=args.radius, detectors=tuple(args.detectors),
                    min_separation_arcsec=args.min_separation, count_slope=args.count_slope,
                    uncatalogued_below_ujy=args.uncatalogued_below, psf_gradient=args.psf_gradient)
    t0 = time.perf_counter()
    sky = simulate_sky(args.out, config)
    print(f"wrote {len(sky.files)} L2 files under {sky.archive} in {time.perf_counter() - t0:.1f} s")
    print(f"catalog: {sky.catalog}\ntruth:   {sky.truth_sources}, {sky.truth_detections}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, n_images=args.images, n_sources=args.sources, seed=args.seed)
    return 0


# -- archive -----------------------------------------------------------------------------------
def _cmd_index(args: argparse.Namespace) -> int:
    from .archive.local import LocalArchive

    t0 = time.perf_counter()
    table = LocalArchive(args.archive, index_path=args.index).index()
    bad = table["error"].notna().sum() if "error" in table else 0
    print(f"indexed {len(table)} files ({bad} unreadable) in {time.perf_counter() - t0:.1f} s")
    return 0


def _query(args: argparse.Namespace):
    from .archive.open import open_archive
    from .archive.query import RegionQuery

    q = RegionQuery(circle=(args.ra, args.dec, args.radius), coverage=args.coverage, bands=args.bands or None,
                    mjd_range=tuple(args.mjd) if args.mjd else None, max_images=args.max_images)
    return open_archive(archive=args.archive, tap_url=args.tap, index_path=args.index).query(q)


def _cmd_query(args: argparse.Namespace) -> int:
    from .archive import observation

    found = _query(args)
    observation.save(found.frame, args.out)
    print(f"{len(found)} observations {found.band_counts} -> {args.out}")
    return 0


# -- batch ---------------------------------------------------------------------------------------
def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import BatchConfig, BatchPipeline
    from .photometry import PhotometryConfig

    config = BatchConfig(center_ra=args.ra, center_dec=args.dec, radius=args.radius, catalog_path=args.catalog,
                         coverage_mode=args.coverage, bands=[f"D{b}" for b in args.bands] if args.bands else None,
                         mjd_range=tuple(args.mjd) if args.mjd else None, max_images=args.max_images,
                         output_dir=args.out, archive=args.archive, tap_url=args.tap, archive_index=args.index,
                         read_in_place=args.read_in_place, copy_images=args.copy_images, export_csv=args.csv,
                         neighbour_catalog_path=args.neighbours, id_column=args.id_column,
                         ra_column=args.ra_column, dec_column=args.dec_column,
                         photometry=PhotometryConfig(catalog_epoch=args.catalog_epoch, astrometry=args.astrometry,
                                                     epsf_calibration=args.epsf))
    stage = args.stage
    with _client(args) as client:
        pipe = BatchPipeline(config, client=client)
        try:
            if stage == "all":
                pipe.run_all()
            else:
                {"query": pipe.run_query, "download": pipe.run_download, "extract": pipe.run_extract,
                 "aggregate": pipe.run_aggregate}[stage]()
        except KeyboardInterrupt:
            # the interrupted gathers' futures are dropped as the cluster closes: nothing to report
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            raise
        finally:  # before the cluster shuts down, interrupted or not: what the run folder holds
            pipe.record()
            print(pipe.summary.table(), flush=True)
    if pipe.summary.failed:
        print(f"{pipe.summary.failed} image(s) failed; see {config.manifest_path}")
    return 0


def _cmd_drizzle(args: argparse.Namespace) -> int:
    from .drizzle3d import Drizzle3DConfig, build_output_wcs, drizzle
    from .drizzle3d.pipeline import existing_cubes, rejected_path

    config = Drizzle3DConfig(center_ra=args.ra, center_dec=args.dec, width=args.width, height=args.height,
                             detector=args.detector, xy_shrink=args.xy_shrink, xy_oversample=args.xy_oversample,
                             z_oversample=args.z_oversample, max_images=args.max_images, output_dir=args.out,
                             overwrite=args.overwrite, archive=args.archive, tap_url=args.tap,
                             archive_index=args.index,
                             data_mirror=args.mirror,
                             **({} if args.exclude_flags is None else {"exclude_flags": args.exclude_flags}))
    if args.plot and not args.spectrum:
        print("spxdask drizzle: error: --plot draws the spectrum of --spectrum RA DEC; give both", file=sys.stderr)
        return 2
    if args.spectrum:  # checked before any work, not after the cube is built
        x, y = build_output_wcs(config).world_to_pixel_values(*args.spectrum)
        if not (-0.5 <= x < config.output_nx() - 0.5 and -0.5 <= y < config.output_ny() - 0.5):
            print(f"spxdask drizzle: error: --spectrum {args.spectrum[0]} {args.spectrum[1]} lies outside the "
                  f"{args.width}' x {args.height}' box centred on {args.ra} {args.dec}", file=sys.stderr)
            return 2
    existing = existing_cubes(config)
    if existing and not args.overwrite:
        print(f"spxdask drizzle: error: output exists: {', '.join(map(str, existing))}; rerun with --overwrite to "
              "replace it", file=sys.stderr)
        return 2
    with _client(args) as client:
        cubes = drizzle(config, client=client)
    for det, images in cubes.rejected.items():
        print(f"D{det}: {len(images)} image(s) rejected, listed with the reasons in {rejected_path(config, det)}")
    if not cubes:
        print("spxdask drizzle: error: no cube: no image covers the box, or none has a valid pixel in it",
              file=sys.stderr)
        return 1
    for det, path in cubes.items():
        print(f"D{det}: {path}")
        if args.spectrum:
            plot = args.plot if args.plot is None or len(cubes) == 1 else args.plot.with_stem(f"{args.plot.stem}_D{det}")
            _cube_spectrum(path, args.spectrum[0], args.spectrum[1], plot, config.storage_options)
    return 0


def _cube_spectrum(path: Path, ra: float, dec: float, plot: Path | None, storage_options: dict | None) -> None:
    """Print the spectrum at (ra, dec) of a cube, write it beside the cube as CSV, and plot it."""
    from .drizzle3d import extract_spectrum

    spectrum = extract_spectrum(path, ra, dec, storage_options=storage_options)
    if not (spectrum["n_images"] > 0).any():
        print(f"{path.stem}: no image of this cube covers {ra} {dec}: no spectrum")
        return
    csv = path.with_name(f"{path.stem}_spectrum_{ra:.5f}_{dec:+.5f}.csv")
    with atomic_path(csv) as tmp:
        spectrum.to_csv(tmp, index=False)
    print(spectrum.to_string(index=False))
    print("flux, flux_error in µJy; n_images: images in the aperture's plane; flag: aperture voxels masked or not "
          "covered, whose light is missing from flux; edge: a frame's band edge or mask crosses the aperture")
    print(f"spectrum: {csv}")
    if plot is not None:
        from .drizzle3d.plot import plot_cube_spectrum

        print(f"spectrum plot: {plot_cube_spectrum(spectrum, plot)}")


def _cmd_lightcurve(args: argparse.Namespace) -> int:
    from .batch import read_lightcurve
    from .batch.plot import plot_lightcurve, plot_spectrum

    rows = read_lightcurve(args.out, args.targetid)
    if rows.empty:
        print(f"spxdask lightcurve: error: no rows for targetid {args.targetid} in {args.out}", file=sys.stderr)
        return 1
    spectrum, source = _stored_summaries(args.out, rows)
    if args.plot:
        print(f"light curve plot: {plot_lightcurve(rows, args.plot, view=args.view, source=source)}")
    if args.spectrum:
        print(f"spectrum plot: {plot_spectrum(rows, args.spectrum, spectrum=spectrum, source=source)}")
    if not (args.plot or args.spectrum):
        cols = ["obs_id", "band", "mjd", "wavelength", "flux_model", "flux_model_error", "model", "flux_total", "flag",
                "quality"]
        print(rows[cols].to_string(index=False))
    return 0


def _stored_summaries(run: Path, rows):
    """The run's channel spectrum and sources-table row of the source of ``rows`` (None for
    each the run does not hold: the plots compute them)."""
    import pandas as pd

    from .batch import read_spectrum
    from .layout import RunLayout

    layout, targetid = RunLayout(run), rows["targetid"].iloc[0]
    spectrum = read_spectrum(run, targetid) if layout.spectra.exists() else None
    source = None
    if layout.sources.exists():
        found = pd.read_parquet(layout.sources, filters=[("targetid", "==", targetid)])
        source = found.iloc[0] if len(found) else None
    return spectrum, source


def _cmd_spectrum(args: argparse.Namespace) -> int:
    from .batch import read_lightcurve, read_spectrum
    from .batch.plot import plot_spectrum

    spectrum = read_spectrum(args.out, args.targetid)
    if spectrum.empty:
        print(f"spxdask spectrum: error: no channel spectrum for targetid {args.targetid} in {args.out}", file=sys.stderr)
        return 1
    if args.csv:
        spectrum.to_csv(args.csv, index=False)
        print(f"spectrum table: {args.csv}")
    if args.plot:
        rows = read_lightcurve(args.out, args.targetid)
        source = _stored_summaries(args.out, rows)[1]
        png = plot_spectrum(rows, args.plot, spectrum=spectrum, source=source, log_wavelength=args.log_wavelength)
        print(f"spectrum plot: {png}")
    if not (args.csv or args.plot):
        print(spectrum.drop(columns="targetid").to_string(index=False))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .layout import RunLayout
    from .report import write_report

    if not args.run.is_dir() or not RunLayout(args.run).is_run():
        print(f"spxdask report: error: {args.run} is not the folder of a batch run (no catalog/ or per_image/)",
              file=sys.stderr)
        return 2
    print(f"report: {write_report(args.run, out=args.out)}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .catalog.versions import current_version
    from .layout import RunLayout
    from .record import read_run_record
    from .report import counts

    layout = RunLayout(args.run)
    if not args.run.is_dir() or not layout.is_run():
        print(f"spxdask info: error: {args.run} is not the folder of a batch run (no catalog/ or per_image/)",
              file=sys.stderr)
        return 2
    record = read_run_record(layout.run_record)
    config = record.get("config", {})
    if config:
        print(f"region: RA {config['center_ra']}, Dec {config['center_dec']}, radius {config['radius']} deg; "
              f"targets {config['catalog_path']}; archive {config.get('archive') or config.get('tap_url') or 'IRSA'}")
        print(f"made with spxdask {record['versions']['spxdask']}, last written {record['written']}")
    for name, value in counts(args.run).items():
        print(f"{name:<18}{value:>10,}")
    seconds = (record.get("summary") or {}).get("seconds") or {}
    print("".join(f"{'time ' + k:<18}{v:>9.1f}s\n" for k, v in seconds.items()), end="")
    version = current_version(layout.catalog)
    files = len(list(layout.per_image.glob("*.parquet"))) if layout.per_image.is_dir() else 0
    print(f"{'per-image files':<18}{files:>10,}")
    print(f"{'catalog':<18}{version.name if version else 'none':>10}")
    print(f"{'report':<18}{layout.report.name if layout.report.exists() else 'none (spxdask report RUN)':>10}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="spxdask", description="SPHEREx spectral images to science products, on Dask.")
    parser.add_argument("--version", action="version", version=f"spxdask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the whole pipeline on the built-in demo sky",
                       description="Simulate a small sky, run the batch pipeline and a Drizzle3D cube on a "
                                   "local cluster, print the summary and write plots.")
    p.add_argument("--out", type=Path, default=Path("spxdask_demo"), help="output folder (default ./spxdask_demo)")
    p.add_argument("--images", type=int, default=36)
    p.add_argument("--sources", type=int, default=400)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("simulate", help="write a simulated SPHEREx L2 archive, catalog and truth tables",
                       description="Write synthetic SPHEREx L2 files under OUT/archive/ (IRSA layout), "
                                   "the catalog as OUT/catalog.csv and truth tables under OUT/truth/.")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--images", type=int, default=24, help="number of L2 files (default 24)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (2040 = full size; default 256)")
    p.add_argument("--sources", type=int, default=300, help="number of catalog sources (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--layout", choices=("qr2", "qr3"), default="qr2", help="file layout (default qr2)")
    p.add_argument("--center", type=float, nargs=2, metavar=("RA", "DEC"), default=(150.1, 2.2),
                   help="region centre in degrees (default 150.1 2.2)")
    p.add_argument("--radius", type=float, default=None, help="region radius in degrees (default: one image width)")
    p.add_argument("--detectors", type=_bands, default=channels.DETECTORS, help="e.g. 1,2,3 (default all six)")
    crowd = p.add_argument_group("crowded skies")
    crowd.add_argument("--min-separation", type=float, default=20.0,
                       help="redraw sources closer than this (arcsec; 0 for crowded skies; default 20)")
    crowd.add_argument("--count-slope", type=float, default=1.0,
                       help="dN/dS ∝ S^-slope over the flux range (default 1: uniform in log S)")
    crowd.add_argument("--uncatalogued-below", type=float, default=0.0,
                       help="sources fainter than this (µJy) are drawn but not catalogued (default 0)")
    crowd.add_argument("--psf-gradient", type=float, default=0.0,
                       help="fractional PSF width change per detector half-width along x (default 0)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("index", help="index a local / fsspec archive of L2 files (headers only)",
                       description="Build or update the Parquet footprint index of an archive; only new files are read.")
    p.add_argument("archive", help="folder or fsspec URL")
    p.add_argument("--index", type=Path, help="index file (default: in the user cache, named by the archive; "
                                              "the archive is only read)")
    p.set_defaults(func=_cmd_index)

    def region(p, out_help):
        p.add_argument("--ra", type=float, required=True, help="region centre RA (deg)")
        p.add_argument("--dec", type=float, required=True, help="region centre Dec (deg)")
        p.add_argument("--radius", type=float, required=True, help="region radius (deg)")
        p.add_argument("--bands", type=_bands, help="e.g. D1,D3 (default all)")
        p.add_argument("--coverage", choices=("any", "full"), default="any",
                       help="any: images touching the circle; full: images containing it")
        p.add_argument("--mjd", type=float, nargs=2, metavar=("MIN", "MAX"), help="MJD range of the midpoints")
        p.add_argument("--max-images", type=int, default=500, help="stop before downloading if more (0: no limit)")
        p.add_argument("--out", type=Path, required=True, help=out_help)
        _source_args(p)

    p = sub.add_parser("query", help="find the L2 images covering a region", description="Query an archive or TAP service.")
    region(p, "output query.parquet")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("batch", help="batch photometry: query, download, extract, aggregate",
                       description="Forced photometry of a catalog in every image of a region, then light curves.")
    p.add_argument("--catalog", required=True,
                   help="the targets: a HATS catalog or collection (folder or URL), or a CSV, Parquet, FITS or "
                        "VOTable file with an id, ra and dec column")
    for column, usual in (("id", "targetid, source_id, objid, id"), ("ra", "ra, ra_deg, raj2000, ra_icrs"),
                          ("dec", "dec, dec_deg, dej2000, decj2000, dec_icrs")):
        p.add_argument(f"--{column}-column", metavar="NAME", help=f"the catalog's {column} column (default: {usual})")
    region(p, "output folder")
    p.add_argument("--stage", choices=("query", "download", "extract", "aggregate", "all"), default="all")
    p.add_argument("--read-in-place", action="store_true",
                   help="measure remote files where they are (no download; local archives always are)")
    p.add_argument("--copy-images", action="store_true",
                   help="copy a local archive's files into OUT/images/ before measuring them")
    p.add_argument("--csv", action="store_true", help="also write one light-curve CSV per source")
    p.add_argument("--neighbours", metavar="PATH",
                   help="deeper catalog (any form of --catalog, with ra, dec) fitted with the targets in the PSF fit")
    p.add_argument("--catalog-epoch", type=float, metavar="YEAR",
                   help="Julian year of the positions of rows without ref_epoch (catalogs with pmra, pmdec)")
    p.add_argument("--astrometry", choices=("apply", "measure", "none"), default="apply",
                   help="measure each image's shift against its stars and apply it when significant (default), only "
                        "record it, or neither")
    p.add_argument("--epsf", metavar="DIR", help="folder of IRSA's ePSF calibration files (epsf_D<n>_*.fits): the "
                                                 "PSF of images whose files carry the older QR2 cube")
    _cluster_args(p)
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("drizzle", help="build (λ, y, x) spectral cubes of a sky box (Drizzle3D)",
                       description="Drizzle every image overlapping a box into one FITS cube per detector "
                                   "(the reference's 7 HDUs, then INPUTS).")
    p.add_argument("--ra", type=float, required=True, help="box centre RA (deg)")
    p.add_argument("--dec", type=float, required=True, help="box centre Dec (deg)")
    p.add_argument("--width", type=float, required=True, help="box width (arcmin)")
    p.add_argument("--height", type=float, required=True, help="box height (arcmin)")
    p.add_argument("--detector", type=int, default=0, choices=range(7), help="1-6, or 0 for every detector")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--xy-shrink", type=float, default=0.8, help="pixfrac (default 0.8)")
    p.add_argument("--xy-oversample", type=float, default=1.0, help="output pixels per native pixel (default 1)")
    p.add_argument("--z-oversample", type=float, default=1.0, help="1: the 17 native channels; else constant R")
    p.add_argument("--exclude-flags", type=lambda t: [] if t.lower() == "none" else [int(b) for b in t.split(",") if b],
                   help="FLAGS bits whose pixels are left out, e.g. 0,6,10 (default: photometry's bad bits; "
                        "'none': every pixel, as the reference)")
    p.add_argument("--spectrum", type=float, nargs=2, metavar=("RA", "DEC"),
                   help="also extract the spectrum at RA DEC (deg) from each cube (printed, and CSV beside the cube)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="with --spectrum: plot it into PNG (PNG_D<n> when "
                                                          "there are cubes of several detectors)")
    p.add_argument("--max-images", type=int, default=500)
    p.add_argument("--mirror", type=Path, help="local mirror of the IRSA tree (data_mirror)")
    p.add_argument("--overwrite", action="store_true")
    _source_args(p)
    _cluster_args(p)
    p.set_defaults(func=_cmd_drizzle)

    p = sub.add_parser("lightcurve", help="show or plot one source's light curve",
                       description="Read one source from a batch run.")
    p.add_argument("targetid", help="the source's exact targetid")
    p.add_argument("--out", type=Path, required=True, help="the batch output folder")
    p.add_argument("--plot", type=Path, help="write the light curve (flux vs MJD) as PNG")
    p.add_argument("--view", choices=VIEWS, default="wavelength",
                   help="the light curve coloured by wavelength, one panel per detector, or normalised by the "
                        "source's spectrum (variability stands out)")
    p.add_argument("--spectrum", type=Path, help="write the spectrum (channels over the measurements) as PNG")
    p.set_defaults(func=_cmd_lightcurve)

    p = sub.add_parser("spectrum", help="show, save or plot one source's channel spectrum",
                       description="Read one source's channel spectrum (from the catalog of a batch run).")
    p.add_argument("targetid", help="the source's exact targetid")
    p.add_argument("--out", type=Path, required=True, help="the batch output folder")
    p.add_argument("--plot", type=Path, help="write the spectrum over the raw measurements as PNG")
    p.add_argument("--csv", type=Path, help="write the channel table as CSV")
    p.add_argument("--log-wavelength", action="store_true", help="logarithmic wavelength axis in the plot")
    p.set_defaults(func=_cmd_spectrum)

    p = sub.add_parser("report", help="write a run's report: one self-contained HTML page",
                       description="Write the run at a glance (counts, sky and time coverage, failures, photometry "
                                   "health, variable sources, spectra, performance) as one HTML page that needs "
                                   "nothing from the network.")
    p.add_argument("run", type=Path, help="the batch output folder")
    p.add_argument("--out", type=Path, help="the page (default RUN/report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("info", help="say what a run holds and how it was made",
                       description="Print a run's region, targets, archive, version, counts, stage times and files.")
    p.add_argument("run", type=Path, help="the batch output folder")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spxdask`` command; returns the exit code."""
    from .archive.irsa import TapError
    from .archive.query import TooManyImagesError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, TapError, TooManyImagesError, OSError) as exc:
        print(f"spxdask {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spxdask {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
