"""A real TAP service for tests: GAVO DaCHS on loopback (installed and started by
``spxdask/testing/dachs/setup.sh``), publishing IRSA-like ``spherex.plane`` and
``spherex.artifact`` rows made from a local archive's index.

``python -m spxdask.testing.tap publish ARCHIVE`` publishes an archive by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd

from ..archive.fetch import md5_of
from ..archive.local import LocalArchive

PORT = int(os.environ.get("DACHS_PORT", "8089"))
TAP_URL = f"http://127.0.0.1:{PORT}/tap"
INPUTS = Path("/var/gavo/inputs/spherex")
SETUP = Path(__file__).with_name("dachs") / "setup.sh"
#: artifact.uri prefix, as at IRSA (``https://irsa.ipac.caltech.edu/`` + uri)
URI_PREFIX = "ibe/data/spherex/"


def rows_from_archive(archive: LocalArchive, first_planeid: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IRSA-like plane and artifact rows for every indexed file of a local archive."""
    index = archive.load_index()
    index = index[index["error"].isna()].reset_index(drop=True) if "error" in index else index
    plane, artifact = [], []
    for i, (_, r) in enumerate(index.iterrows()):
        pid = first_planeid + i
        fp = [float(v) for v in r["footprint"]]
        plane.append({"planeid": pid, "obsid": str(uuid.uuid5(uuid.NAMESPACE_URL, r["obs_id"])),
                      "obs_publisher_did": f"ivo://irsa.ipac/{r['collection']}?{r['obs_id']}/D{int(r['detector'])}",
                      "poly_dali": " ".join(f"{v:.10f}" for v in fp), "time_bounds_lower": r["t_min"],
                      "time_bounds_upper": r["t_max"], "energy_bounds_lower": r["wavelength_min"] * 1e-6,
                      "energy_bounds_upper": r["wavelength_max"] * 1e-6,
                      "energy_bandpassname": f"SPHEREx-D{int(r['detector'])}", "provenance_version": r["version"]})
        artifact.append({"planeid": pid, "uri": URI_PREFIX + r["url"], "contentlength": int(r["size"]),
                         "contentchecksum": f"md5:{md5_of(archive.url_of(r['url']))}", "producttype": "science"})
    return pd.DataFrame(plane), pd.DataFrame(artifact)


def publish(plane: pd.DataFrame, artifact: pd.DataFrame) -> str:
    """Replace the service's rows (``dachs imp q``); returns the TAP URL. Needs root and a
    service set up by ``setup.sh``."""
    if not (INPUTS / "q.rd").exists():
        raise RuntimeError(f"no DaCHS service set up: run `sh {SETUP}` as root first")
    for name, table in (("plane", plane), ("artifact", artifact)):
        tmp = INPUTS / "data" / f".{name}.csv.tmp"
        table.to_csv(tmp, index=False)
        os.chmod(tmp, 0o664)
        os.replace(tmp, INPUTS / "data" / f"{name}.csv")
    proc = subprocess.run(["su", "dachsroot", "-c", "dachs imp q"], cwd=INPUTS, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dachs imp q failed: {proc.stderr[-2000:]}")
    return TAP_URL


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "publish":
        print("usage: python -m spxdask.testing.tap publish ARCHIVE", file=sys.stderr)
        return 2
    print(publish(*rows_from_archive(LocalArchive(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
