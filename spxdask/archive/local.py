"""A local (or fsspec: s3://, https://) archive of L2 files, indexed into a Parquet footprint
index from headers only, queried with the same semantics as IRSA's TAP service."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import asdict
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd

from .. import geometry
from .._io import is_remote, write_parquet_atomic
from ..cluster import setting
from ..spherex import channels
from ..spherex.l2 import L2File
from . import observation as obs
from .irsa import IRSA_DATA_ROOT
from .query import ObservationSet, RegionQuery, collection_matches, finish


def default_index(root: str) -> Path:
    """Where an archive's index lives by default: in the user's cache (the ``spxdask.cache_dir``
    setting, else ``$XDG_CACHE_HOME/spxdask``, else ``~/.cache/spxdask``), named by the archive's
    root, so a read-only archive can be used and its index serves every run that reads it."""
    location = root if is_remote(root) else str(Path(root).resolve())
    cache = setting("cache_dir") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spxdask"
    return Path(cache) / "archive-index" / f"{hashlib.sha256(location.encode()).hexdigest()[:20]}.parquet"
#: Bytes per read-ahead block while indexing: headers only.
HEADER_BLOCK = 2**15


def _collection(relpath: str, header) -> str:
    release = relpath.split("/", 1)[0] if relpath.split("/", 1)[0] in ("qr", "qr2", "qr3") else "qr2"
    deep = "deep" in str(header.get("SPS_FLAGS", "")).lower()
    return f"spherex_{release}" + ("_deep" if deep else "")


def _version(relpath: str) -> str:
    parts = [p for p in relpath.split("/") if p.startswith("l2b-v")]
    return parts[0] if parts else ""


def observation_of(l2: L2File, url: str, relpath: str | None = None) -> obs.Observation:
    """The :class:`~spxdask.archive.observation.Observation` of an open L2 file, from its
    headers: identity, times, footprint; collection and processing tag from its path in the
    IRSA layout (``relpath``, default ``url``)."""
    m = l2.meta
    det = channels.detector(m.detector)
    relpath = url if relpath is None else relpath
    return obs.Observation(obs_id=m.obs_id, detector=m.detector, mjd=m.mjd, t_min=m.mjd_beg, t_max=m.mjd_end,
                           wavelength_min=det.em_min_um, wavelength_max=det.em_max_um,
                           footprint=tuple(l2.footprint().ravel().tolist()), url=url, size=l2.size,
                           collection=_collection(relpath, l2.header), version=_version(relpath))


def read_record(url: str, relpath: str, storage_options: dict | None = None) -> dict:
    """One index row from a file's headers (never its data)."""
    try:
        with L2File(url, storage_options=storage_options, block_size=HEADER_BLOCK) as l2:
            record = asdict(observation_of(l2, relpath))
        return {**record, "footprint": list(record["footprint"]), "error": None}
    except Exception as exc:  # an unreadable file is listed with its error, not dropped
        return {"url": relpath, "size": None, "error": f"{type(exc).__name__}: {exc}"}


def _record_under(relpath: str, root: str, storage_options: dict) -> dict:
    return read_record(f"{root}/{relpath}", relpath, storage_options)


class LocalArchive:
    """An archive of L2 files under ``root`` (a folder or an fsspec URL) and its index.

    Parameters
    ----------
    root : str or Path
        Folder or URL holding files in the IRSA layout (``qr2/level2/...``).
    index_path : str or Path, optional
        Where the footprint index lives; default :func:`default_index`, in the user's cache:
        the archive itself is only read.
    storage_options : dict, optional
        fsspec options for a remote root (e.g. ``{"anon": True}``).
    client : distributed.Client, optional
        Where the headers are read (default: the running Client, else local threads).
    """

    def __init__(self, root: str | Path, *, index_path: str | Path | None = None, storage_options: dict | None = None,
                 client=None):
        self.root = str(root).rstrip("/")
        self.client = client
        self.storage_options = storage_options or {}
        self.fs, self._base = fsspec.core.url_to_fs(self.root, **self.storage_options)
        self.remote = is_remote(self.root)
        if not self.remote and not self.fs.isdir(self._base):
            raise FileNotFoundError(f"archive {self.root}: no such folder")
        self.index_path = Path(index_path) if index_path is not None else default_index(self.root)

    def url_of(self, relpath: str) -> str:
        return f"{self.root}/{relpath}"

    def _files(self) -> dict[str, int | None]:
        """Relative paths of the .fits files under the root, with their size when the
        listing tells it (HTTP listings do not)."""
        self.fs.invalidate_cache(self._base)  # what the archive holds now, not an earlier listing
        try:
            found = self.fs.find(self._base, detail=True)
        except OSError as exc:
            raise OSError(f"archive {self.root}: cannot list its files ({exc})") from exc
        base = self._base.rstrip("/")
        out = {}
        for path, info in found.items():
            rel = posixpath.relpath(path, base) if not path.startswith("http") else path[len(base) + 1:]
            if rel.endswith(".fits") and not posixpath.basename(rel).startswith("."):
                out[rel] = int(info["size"]) if info.get("size") else None
        return out

    def index(self, *, scheduler: str | None = None) -> pd.DataFrame:
        """Build or update the index: only files not yet indexed, whose size changed or that
        could not be read last time (a broken file may be replaced, a network fault pass) are
        read, in parallel with Dask (on the archive's client, or the local ``scheduler`` when
        given), from their headers.

        Parameters
        ----------
        scheduler : str, optional
            A local dask scheduler, used when the archive has no client.

        Returns
        -------
        DataFrame
            The whole index: one row per file, ``error`` for those that cannot be read.
        """
        import dask.bag as db

        from ..cluster import compute

        files = self._files()
        old = pd.read_parquet(self.index_path) if self.index_path.exists() else pd.DataFrame(columns=["url", "size"])
        readable = old["error"].isna() if "error" in old else np.ones(len(old), bool)
        known = dict(zip(old["url"][readable], old["size"][readable]))
        new = [rel for rel, size in files.items() if rel not in known or (size is not None and known[rel] != size)]
        if new:
            bag = db.from_sequence(new, partition_size=16).map(_record_under, self.root, self.storage_options)
            (rows,) = (bag.compute(scheduler=scheduler),) if scheduler else compute(bag, client=self.client)
            fresh = pd.DataFrame(rows)
            keep = old[old["url"].isin(files) & ~old["url"].isin(fresh["url"])]
            table = pd.concat([keep, fresh], ignore_index=True) if len(keep) else fresh
            table = table.sort_values("url", ignore_index=True)
            write_parquet_atomic(table, self.index_path)
            return table
        if len(old) != len(files):  # files were removed
            old = old[old["url"].isin(files)].reset_index(drop=True)
            write_parquet_atomic(old, self.index_path)
        return old

    def load_index(self) -> pd.DataFrame:
        """The index; built first when there is none yet."""
        if not self.index_path.exists():
            return self.index()
        return pd.read_parquet(self.index_path)

    def query(self, q: RegionQuery) -> ObservationSet:
        """Observations matching ``q``, with the INTERSECTS / CONTAINS semantics of IRSA's TAP,
        from the index brought up to date first (files added since are read, removed ones
        dropped: a listing, and the headers of the new files only).

        Parameters
        ----------
        q : RegionQuery

        Returns
        -------
        ObservationSet
        """
        table = self.index()
        broken = table[table["error"].notna()] if "error" in table else table.iloc[:0]
        if q.bands:  # what the file names say of the unreadable files' detectors
            named = broken["url"].map(named_detector)
            broken = broken[named.isna() | named.isin(q.bands)]
        unreadable = [(self.url_of(u), e) for u, e in zip(broken["url"], broken.get("error", []))]
        table = table[table["error"].isna()] if "error" in table else table
        if q.bands:
            table = table[table["detector"].isin(q.bands)]
        if q.mjd_range:
            table = table[(table["mjd"] >= q.mjd_range[0]) & (table["mjd"] <= q.mjd_range[1])]
        if q.collections:
            table = table[collection_matches(table["collection"], q.collections)]
        if len(table):
            poly = geometry.polygons(np.stack(list(table["footprint"])).reshape(-1, 4, 2))
            if q.circle is not None:
                test = geometry.intersects_circle if q.coverage == "any" else geometry.circle_inside
                hit = test(poly, *q.circle)
            elif q.point is not None:
                point = geometry.unit_vectors(np.array(q.point[0]), np.array(q.point[1]))
                hit = geometry.contains_points(poly, point[None])[:, 0]
            else:
                hit = geometry.intersects_polygon(poly, geometry.polygons(np.asarray(q.polygon)[None])[0])
            table = table[hit]
        frame = table.assign(url=[self.url_of(u) for u in table["url"]])
        frame = frame.astype({"detector": "int8"})
        return finish(frame[obs.SCHEMA.names], q, self.root, unreadable)


#: The detector in an L2 file name (``level2_<obs_id>D<n>_spx_...``).
_DETECTOR_IN_NAME = r"D([1-6])_spx_[^/]*\.fits$"


def named_detector(url: str) -> int | None:
    """The detector an L2 file name tells (``..._2D3_spx_...`` → 3), None when it tells none:
    what is known of a file that cannot be read."""
    found = re.search(_DETECTOR_IN_NAME, url)
    return int(found.group(1)) if found else None


def mirror_path(url: str, mirror_root: str | Path) -> str:
    """The reference's ``data_mirror`` rule: an IRSA download URL maps to the same key under a
    local mirror (``<mirror>/qr2/level2/...``). Keys that would leave the mirror are refused.

    Parameters
    ----------
    url : str
        An IRSA download URL (HTTPS or S3).
    mirror_root : path
        The mirror.

    Returns
    -------
    str
        The file's path in the mirror.
    """
    key = url.split("?")[0]
    for prefix in (IRSA_DATA_ROOT, "s3://nasa-irsa-spherex/", "https://nasa-irsa-spherex.s3.amazonaws.com/",
                   "https://nasa-irsa-spherex.s3.us-east-1.amazonaws.com/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    else:
        raise ValueError(f"not an IRSA SPHEREx data URL: {url}")
    norm = posixpath.normpath(key)
    if norm.startswith(("..", "/")):
        raise ValueError(f"URL {url} points outside the mirror")
    return str(Path(mirror_root) / norm)
