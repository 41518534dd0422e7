"""What a query returns, whatever archive answered it: observations as a pandas table, as
records, and as a Dask bag with explicit partitions; the ``max_images`` gate; saving as
``query.parquet`` plus the reference's ``query_summary.yaml``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .._config import valid_position
from .._io import atomic_path
from ..layout import RunLayout
from . import observation as obs

#: Observations per bag partition: each partition is one download pool / one task.
PARTITION_SIZE = 8


class TooManyImagesError(RuntimeError):
    """A query found more images than ``max_images`` allows (raised before any download)."""


@dataclass(frozen=True)
class RegionQuery:
    """A query: exactly one of ``circle`` (ra, dec, radius deg), ``point`` (ra, dec) or
    ``polygon`` (k x (ra, dec) deg, convex), plus filters.

    ``coverage`` applies to circles: ``"any"`` = INTERSECTS (the footprint touches the circle),
    ``"full"`` = CONTAINS(CIRCLE, footprint) (the circle lies inside the footprint).
    ``collections``: exact names (``spherex_qr2_deep``) or ``qr2``/``qr3``/``wide``/``deep``.

    Parameters
    ----------
    circle : (float, float, float), optional
        (ra, dec, radius), deg.
    point : (float, float), optional
        (ra, dec), deg.
    polygon : tuple of (float, float), optional
        A convex polygon's vertices, deg.
    coverage : {"any", "full"}
        For circles: footprints touching it, or containing it.
    bands : tuple of int, optional
        Detectors.
    mjd_range : (float, float), optional
        Images taken within these MJDs.
    collections : tuple of str, optional
        Collections, by name or kind.
    max_images : int
        More images than this raise :class:`TooManyImagesError` (0: no limit).
    """

    circle: tuple[float, float, float] | None = None
    point: tuple[float, float] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    coverage: str = "any"
    bands: tuple[int, ...] | None = None
    mjd_range: tuple[float, float] | None = None
    collections: tuple[str, ...] | None = None
    max_images: int = 0

    def __post_init__(self) -> None:
        shapes = [s for s in (self.circle, self.point, self.polygon) if s is not None]
        if len(shapes) != 1:
            raise ValueError("give exactly one of circle, point or polygon")
        if self.coverage not in ("any", "full"):
            raise ValueError(f"coverage must be 'any' or 'full', got {self.coverage!r}")
        if self.circle is not None:
            ra, dec, r = self.circle
            _check_position(ra, dec)
            if not 0 < r <= 90:
                raise ValueError(f"radius must be within (0, 90] deg, got {r}")
        if self.point is not None:
            _check_position(*self.point)
        if self.polygon is not None:
            if len(self.polygon) < 3:
                raise ValueError("a polygon needs at least 3 corners")
            for ra, dec in self.polygon:
                _check_position(ra, dec)
        if self.mjd_range is not None and not self.mjd_range[0] <= self.mjd_range[1]:
            raise ValueError(f"mjd_range must be (min, max), got {self.mjd_range}")
        if self.max_images < 0:
            raise ValueError(f"max_images must be >= 0 (0: no limit), got {self.max_images}")


def _check_position(ra: float, dec: float) -> None:
    if not valid_position(ra, dec):
        raise ValueError(f"position must be ra in [0, 360], dec in [-90, 90] deg, got ({ra}, {dec})")


def collection_matches(names: pd.Series, wanted: tuple[str, ...]) -> pd.Series:
    """Rows whose collection is one of ``wanted`` (exact names or qr2/qr3/wide/deep)."""
    hit = pd.Series(False, index=names.index)
    for w in wanted:
        if w in ("wide", "deep"):
            deep = names.str.endswith("_deep")
            hit |= deep if w == "deep" else ~deep & names.str.startswith("spherex_")
        elif w in ("qr2", "qr3"):
            hit |= names.str.startswith(f"spherex_{w}")
        else:
            hit |= names == w
    return hit


@dataclass
class ObservationSet:
    """The observations a query found (newest processing version per file).

    Parameters
    ----------
    frame : DataFrame
        One row per file (the :class:`Observation` fields).
    query : RegionQuery or None
        What was asked (None when read back from disk).
    source : str
        The archive or service asked.
    query_time : datetime
        When.
    unreadable : list of (str, str)
        (url, reason) of the archive's files that could belong to the answer but cannot be read.
    """

    frame: pd.DataFrame
    query: RegionQuery | None  # None when read back from disk
    source: str
    query_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: (url, reason) of the archive's files that could belong to the answer but cannot be read
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def observations(self) -> list[obs.Observation]:
        return obs.from_frame(self.frame)

    def to_pandas(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_bag(self, *, partition_size: int = PARTITION_SIZE):
        """A Dask bag of the :class:`Observation` records.

        Parameters
        ----------
        partition_size : int
            Records per partition.

        Returns
        -------
        dask.bag.Bag
        """
        import dask.bag as db

        records = self.observations
        if not records:
            return db.from_sequence([], npartitions=1)
        return db.from_sequence(records, partition_size=max(1, partition_size))

    @property
    def band_counts(self) -> dict[str, int]:
        counts = self.frame["detector"].value_counts().sort_index()
        return {f"D{int(d)}": int(n) for d, n in zip(counts.index.to_numpy(), counts.to_numpy()) if n > 0}

    def summary(self) -> dict[str, Any]:
        """The reference's ``query_summary.yaml`` content."""
        f = self.frame
        q = self.query
        region = None if q is None else {
            "circle": list(q.circle) if q.circle else None, "point": list(q.point) if q.point else None,
            "polygon": [list(c) for c in q.polygon] if q.polygon else None, "coverage_mode": q.coverage}
        return {
            "query_time": self.query_time.isoformat(),
            "source": self.source,
            "region": region,
            "bands": [f"D{b}" for b in q.bands] if q is not None and q.bands else None,
            "mjd_range": list(q.mjd_range) if q is not None and q.mjd_range else None,
            "total_observations": len(f),
            "band_counts": self.band_counts,
            "time_span_days": float(f["mjd"].max() - f["mjd"].min()) if len(f) else 0.0,
            "total_size_gb": float(f["size"].fillna(0).sum() / 1e9),
            "unreadable": [{"url": url, "error": error} for url, error in self.unreadable],
        }

    def save(self, output_dir: str | Path) -> tuple[Path, Path]:
        """Write ``query.parquet`` and ``query_summary.yaml`` atomically into ``output_dir``.

        Parameters
        ----------
        output_dir : path
            The run folder.

        Returns
        -------
        query, summary : Path
        """
        layout = RunLayout(Path(output_dir))
        table = obs.save(self.frame, layout.query)
        with atomic_path(layout.query_summary) as tmp:
            tmp.write_text(yaml.safe_dump(self.summary(), sort_keys=False))
        return table, layout.query_summary


def finish(frame: pd.DataFrame, query: RegionQuery, source: str,
           unreadable: list[tuple[str, str]] | None = None) -> ObservationSet:
    """Apply the newest-version rule, order by time, and the ``max_images`` gate."""
    frame = obs.newest_versions(frame).sort_values(["t_min", "detector"], ignore_index=True)
    if query.max_images and len(frame) > query.max_images:
        raise TooManyImagesError(f"query found {len(frame)} images, more than max_images={query.max_images}; "
                                 "narrow the region, bands or MJD range, or raise max_images")
    return ObservationSet(frame.reset_index(drop=True), query, source, unreadable=list(unreadable or []))


def load_summary(output_dir: str | Path) -> dict[str, Any]:
    """Read ``query_summary.yaml`` (safe YAML)."""
    path = RunLayout(Path(output_dir)).query_summary
    if not path.exists():
        raise FileNotFoundError(f"no query summary at {path}: run the query stage first")
    return yaml.safe_load(path.read_text())


def load(output_dir: str | Path, query: RegionQuery | None = None) -> ObservationSet:
    """Read a saved ``query.parquet`` back."""
    path = RunLayout(Path(output_dir)).query
    if not path.exists():
        raise FileNotFoundError(f"no query results at {path}: run the query stage first")
    frame = obs.to_frame(obs.load(path))
    return ObservationSet(frame, query, str(path))
