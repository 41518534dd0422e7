"""A whole simulated survey written to disk, one Dask task per image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask
import dask.bag as db
import pandas as pd

from .._io import atomic_path, write_parquet_atomic
from ..cluster import running_client
from .config import SimConfig
from .sky import GAIA_MOTION, TRACTOR_SHAPE, ImageSpec, make_catalog, plan_survey
from .writer import write_image


@dataclass(frozen=True)
class SimulatedSky:
    """Where :func:`simulate_sky` wrote things.

    Parameters
    ----------
    root : Path
        The folder given.
    archive : Path
        The L2 files, in IRSA's layout.
    catalog : Path
        ``catalog.csv``: targetid, ra, dec of the catalogued sources (and their motions and shapes).
    truth_sources : Path
        Every source with its SED (Parquet).
    truth_detections : Path
        Every source in every image, with its true flux (Parquet).
    files : list of Path
        The L2 files.
    """

    root: Path
    archive: Path
    catalog: Path
    truth_sources: Path
    truth_detections: Path
    files: list[Path]


def simulate_sky(out: str | Path, config: SimConfig = SimConfig(), *, client=None,
                 scheduler: str | None = None) -> SimulatedSky:
    """Write a simulated survey: ``out/archive/<IRSA layout>``, ``out/catalog.csv`` (targetid,
    ra, dec of the catalogued sources) and ``out/truth/{sources,detections}.parquet`` (all).

    Images are rendered in parallel with Dask: on ``client`` when given, else with the local
    ``scheduler`` ("sync", "threads", "processes") when given, else on the running Client, else
    in local processes (one task per image; "sync" for one or two images).

    Parameters
    ----------
    out : path
        The folder.
    config : SimConfig
        What to simulate.
    client : distributed.Client, optional
    scheduler : str, optional
        A local dask scheduler, when no client is given.

    Returns
    -------
    SimulatedSky
    """
    root = Path(out)
    archive = root / "archive"
    catalog = make_catalog(config)
    specs = plan_survey(config, catalog)
    truths = db.from_sequence(specs, npartitions=min(len(specs), 64)).map(write_image, config=config, archive_dir=archive)
    where = client or scheduler or running_client() or ("processes" if len(specs) > 2 else "sync")
    (frames,) = dask.compute(truths, scheduler=where)
    truth_dir = root / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "catalog.csv") as tmp:
        listed = ["targetid", "ra", "dec", *(c for c in (*GAIA_MOTION, *TRACTOR_SHAPE) if c in catalog)]
        catalog.loc[catalog["catalogued"], listed].to_csv(tmp, index=False, float_format="%.10f")
    write_parquet_atomic(catalog, truth_dir / "sources.parquet")
    write_parquet_atomic(pd.concat(frames, ignore_index=True), truth_dir / "detections.parquet")
    return SimulatedSky(root, archive, root / "catalog.csv", truth_dir / "sources.parquet",
                        truth_dir / "detections.parquet", [archive / s.relpath for s in specs])


def write_tiny_image(folder: str | Path) -> tuple[Path, ImageSpec, pd.DataFrame]:
    """One 64² QR2 image of 20 sources, written into ``folder`` (what the loops are compiled on).

    Parameters
    ----------
    folder : path

    Returns
    -------
    path : Path
        The file.
    spec : ImageSpec
        Its pointing and epoch.
    catalog : DataFrame
        Its sources (targetid, ra, dec, ...).
    """
    config = SimConfig(n_images=1, size=64, n_sources=20, detectors=(1,), n_epochs=1, min_separation_arcsec=0.0)
    catalog = make_catalog(config)
    spec = plan_survey(config, catalog)[0]
    write_image(spec, config, Path(folder))
    return Path(folder) / spec.relpath, spec, catalog
