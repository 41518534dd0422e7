"""The ``spxdask`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .spherex import channels


def _detectors(text: str) -> tuple[int, ...]:
    try:
        return tuple(channels.parse_band(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_simulate(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--detectors", type=_detectors, default=channels.DETECTORS, help="e.g. 1,2,3 (default all six)")
    p.set_defaults(func=_cmd_simulate)


def _sim_config(args: argparse.Namespace):
    from .spherex.simulate import SimConfig

    return SimConfig(n_images=args.images, size=args.size, n_sources=args.sources, seed=args.seed,
                     layout=args.layout, center=tuple(args.center), radius=args.radius,
                     detectors=tuple(args.detectors))


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .spherex.simulate import simulate_sky

    t0 = time.perf_counter()
    sky = simulate_sky(args.out, _sim_config(args))
    print(f"wrote {len(sky.files)} L2 files under {sky.archive} in {time.perf_counter() - t0:.1f} s")
    print(f"catalog: {sky.catalog}\ntruth:   {sky.truth_sources}, {sky.truth_detections}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run spxdask on the built-in demo sky",
                       description="Simulate the built-in demo sky (a few dozen small images, hundreds of "
                                   "sources) and report what was made.")
    p.add_argument("--out", type=Path, default=Path("spxdask_demo"), help="output folder (default ./spxdask_demo)")
    p.add_argument("--images", type=int, default=36)
    p.add_argument("--sources", type=int, default=400)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from .spherex.simulate import SimConfig, simulate_sky

    t0 = time.perf_counter()
    cfg = SimConfig(n_images=args.images, size=256, n_sources=args.sources, seed=args.seed, radius=0.5)
    sky = simulate_sky(args.out, cfg)
    truth = pd.read_parquet(sky.truth_detections)
    print(f"demo sky: {len(sky.files)} L2 files ({cfg.size}x{cfg.size} px, detectors D1-D6) under {sky.archive}")
    print(f"catalog:  {cfg.n_sources} sources in {sky.catalog}; {len(truth)} source-image detections "
          f"({truth['targetid'].nunique()} sources seen) in {sky.truth_detections}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spxdask", description="SPHEREx spectral images to science products, on Dask.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spxdask`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"spxdask {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
