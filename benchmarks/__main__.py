"""Run the registered benchmarks, print a table, write JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

from . import (  # noqa: F401
    REGISTRY,
    bench_archive,
    bench_catalogs,
    bench_drizzle,
    bench_lightcurves,
    bench_photometry,
    bench_psf,
    bench_report,
    bench_sources,
    bench_spherex,
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(REGISTRY)})")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    unknown = set(args.names) - set(REGISTRY)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {sorted(REGISTRY)}")
    results = []
    for name in args.names or list(REGISTRY):
        print(f"running {name} ...", flush=True)
        results.extend(REGISTRY[name]())
    header = f"{'benchmark':<18} {'case':<38} {'spxdask s':>10} {'baseline':<26} {'baseline s':>10} {'ratio':>7}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        base = f"{r.baseline_seconds:10.4f}" if r.baseline_seconds is not None else " " * 10
        ratio = f"{r.ratio:7.2f}" if r.ratio is not None else ""
        print(f"{r.benchmark:<18} {r.case:<38} {r.seconds:10.4f} {r.baseline:<26} {base} {ratio}")
        for k, v in r.extra.items():
            print(f"{'':<18}   {k}: {v}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = args.out / f"{stamp}.json"
    path.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                                "results": [r.as_dict() for r in results]}, indent=2, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
