"""IRSA's TAP service (or any TAP service publishing IRSA's ``spherex.plane`` and
``spherex.artifact`` tables), through pyvo: the ADQL IRSA accepts, sync first and async on
failure or overflow, retries with backoff and jitter on server errors and timeouts."""

from __future__ import annotations

import logging
import random
import re
import time

import numpy as np
import pandas as pd

from ..spherex import channels
from .query import ObservationSet, RegionQuery, finish

IRSA_TAP = "https://irsa.ipac.caltech.edu/TAP"
IRSA_DATA_ROOT = "https://irsa.ipac.caltech.edu/ibe/data/spherex/"
URI_PREFIX = "ibe/data/spherex/"  # artifact.uri starts with it; the rest is the archive key
log = logging.getLogger(__name__)
_OBS_ID = re.compile(r"\?([^/]+)/")
_COLLECTION = re.compile(r"ivo://[^/]+/([^?]+)\?")


class TapError(RuntimeError):
    """The TAP service failed or refused the query; the message names the service."""


def _polygon(corners) -> str:
    return "POLYGON('ICRS', " + ", ".join(f"{ra:.8f}, {dec:.8f}" for ra, dec in corners) + ")"


_FROM = "FROM spherex.artifact a JOIN spherex.plane p ON a.planeid = p.planeid"


def adql(q: RegionQuery, *, piece: str = "") -> str:
    """The ADQL for ``q`` on ``spherex.artifact JOIN spherex.plane``, as IRSA accepts it
    (``piece``: more conditions, such as a time window)."""
    return ("SELECT a.uri, a.contentlength, a.contentchecksum, p.obs_publisher_did, p.time_bounds_lower, "
            "p.time_bounds_upper, p.energy_bandpassname, p.energy_bounds_lower, p.energy_bounds_upper, p.poly "
            f"{_FROM} WHERE {_where(q)}{piece} ORDER BY p.time_bounds_lower")


def _where(q: RegionQuery) -> str:
    if q.circle is not None:
        ra, dec, r = q.circle
        circle = f"CIRCLE('ICRS', {ra:.8f}, {dec:.8f}, {r:.8f})"
        where = (f"INTERSECTS(p.poly, {circle}) = 1" if q.coverage == "any" else f"CONTAINS({circle}, p.poly) = 1")
    elif q.point is not None:
        where = f"CONTAINS(POINT('ICRS', {q.point[0]:.8f}, {q.point[1]:.8f}), p.poly) = 1"
    else:
        where = f"INTERSECTS(p.poly, {_polygon(q.polygon)}) = 1"
    if q.bands:
        where += " AND (" + " OR ".join(f"p.energy_bandpassname = '{channels.detector(b).bandpass_name}'"
                                        for b in q.bands) + ")"
    if q.mjd_range:
        mid = "(p.time_bounds_lower + p.time_bounds_upper) / 2.0"
        where += f" AND {mid} >= {q.mjd_range[0]:.8f} AND {mid} <= {q.mjd_range[1]:.8f}"
    if q.collections:
        terms = []
        for c in q.collections:
            if c == "deep":
                terms.append("p.obs_publisher_did LIKE '%\\_deep?%'")
            elif c == "wide":
                terms.append("p.obs_publisher_did NOT LIKE '%\\_deep?%'")
            elif c in ("qr2", "qr3"):
                terms.append(f"p.obs_publisher_did LIKE 'ivo://irsa.ipac/spherex\\_{c}%'")
            elif re.fullmatch(r"[A-Za-z0-9_]+", c):
                terms.append(f"p.obs_publisher_did LIKE 'ivo://irsa.ipac/{c}?%'")
            else:
                raise ValueError(f"bad collection name {c!r}")
        where += " AND (" + " OR ".join(terms) + ")"
    return where


def time_windows(t0: float, t1: float, count: int) -> list[str]:
    """ADQL conditions cutting [t0, t1] of ``time_bounds_lower`` into ``count`` windows, each
    row in exactly one (the first open below, the last open above: no row lost to rounding)."""
    edges = [f"{e:.10f}" for e in np.linspace(t0, t1, count + 1)[1:-1]]
    lows, highs = [None, *edges], [*edges, None]
    return [(f" AND p.time_bounds_lower >= {lo}" if lo else "") + (f" AND p.time_bounds_lower < {hi}" if hi else "")
            for lo, hi in zip(lows, highs)]


def _footprint(poly) -> list[float]:
    values = np.asarray(poly, float).ravel() if poly is not None else np.empty(0)
    if values.size >= 8 and values.size % 2 == 0:
        return values[:8].tolist()
    return [float("nan")] * 8


def rows_to_frame(table, data_root: str) -> pd.DataFrame:
    """Observation rows from the TAP result (astropy Table); rows whose obs_publisher_did cannot
    be parsed are dropped with a warning."""
    rows = []
    for r in table:
        did = str(r["obs_publisher_did"])
        m = _OBS_ID.search(did)
        band = str(r["energy_bandpassname"])
        if not m:
            log.warning("skipping a TAP row with an unparseable obs_publisher_did %r", did)
            continue
        det = channels.parse_band(band)
        uri = str(r["uri"])
        version = next((p for p in uri.split("/") if p.startswith("l2b-v")), "")
        coll = _COLLECTION.search(did)
        size = r["contentlength"]
        checksum = str(r["contentchecksum"]) if r["contentchecksum"] is not np.ma.masked else None
        t0, t1 = float(r["time_bounds_lower"]), float(r["time_bounds_upper"])
        rows.append({
            "obs_id": m[1], "detector": det, "mjd": 0.5 * (t0 + t1), "t_min": t0, "t_max": t1,
            "wavelength_min": float(r["energy_bounds_lower"]) * 1e6, "wavelength_max": float(r["energy_bounds_upper"]) * 1e6,
            "footprint": _footprint(r["poly"]),
            "url": uri if "://" in uri else data_root.rstrip("/") + "/" + uri.lstrip("/").removeprefix(URI_PREFIX),
            "size": None if size is np.ma.masked else int(size),
            "checksum": (checksum.removeprefix("md5:") if checksum else None),
            "collection": coll[1] if coll else "", "version": version,
        })
    return pd.DataFrame(rows, columns=["obs_id", "detector", "mjd", "t_min", "t_max", "wavelength_min",
                                       "wavelength_max", "footprint", "url", "size", "checksum", "collection",
                                       "version"]).astype({"detector": "int8"})


class IrsaArchive:
    """Query IRSA's TAP service (or a stand-in at ``tap_url``).

    Parameters
    ----------
    tap_url : str
        The TAP endpoint.
    data_root : str
        Where the files are: the download URL is ``data_root`` + the archive key (the
        relative ``artifact.uri`` without its ``ibe/data/spherex/`` prefix). IRSA by default;
        ``s3://nasa-irsa-spherex/`` for the AWS mirror; a local mirror folder.
    retries, backoff, max_backoff : int, float, float
        Retries on 5xx / timeouts / connection errors; waits ``backoff`` x 2^attempt seconds
        (at most ``max_backoff``) times a random factor in [0.5, 1.5].
    sync_maxrec : int
        Row limit of a synchronous query. A region query that overflows it is asked again in
        time windows of about this many rows each (the rows counted first), so no answer
        larger than that is ever held; another query is redone as an async job.
    async_timeout : float
        Seconds an async job may take (polled with growing pauses); then it is aborted.
    """

    def __init__(self, tap_url: str = IRSA_TAP, data_root: str = IRSA_DATA_ROOT, retries: int = 4, backoff: float = 2.0,
                 max_backoff: float = 60.0, sync_maxrec: int = 20000, async_timeout: float = 600.0):
        self.tap_url = tap_url
        self.data_root = data_root
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.sync_maxrec = sync_maxrec
        self.async_timeout = async_timeout

    def _service(self):
        import pyvo

        return pyvo.dal.TAPService(self.tap_url)

    def _transient(self, exc: Exception) -> bool:
        import pyvo

        code = getattr(exc, "code", None)
        if isinstance(exc, pyvo.dal.DALQueryError):
            return False  # the service understood and refused the query
        return code is None or (isinstance(code, int) and (code >= 500 or code in (408, 429)))

    def _with_retries(self, what: str, fn):
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except TapError:
                raise  # final: the job failed or ran out of time
            except Exception as exc:  # noqa: BLE001 - classified below
                if attempt == self.retries or not self._transient(exc):
                    raise TapError(f"TAP service {self.tap_url}: {what} failed: {exc}") from exc
                wait = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.5)
                log.warning("TAP %s failed (%s); retrying in %.1f s", what, exc, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _run_async(self, query: str):
        """The result of ``query`` as an async job, polled until it ends or ``async_timeout``
        passes (then aborted): a job in ERROR or out of time is final (:class:`TapError`),
        failures to reach the service are retried."""
        def run():
            import pyvo

            job = self._service().submit_job(query, maxrec=None)
            try:
                job.run()
                deadline, pause = time.monotonic() + self.async_timeout, 0.1
                while (phase := job.phase) not in ("COMPLETED", "ERROR", "ABORTED"):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        job.abort()
                        raise TapError(f"TAP service {self.tap_url}: async job still {phase} after "
                                       f"{self.async_timeout:g} s (async_timeout); aborted")
                    time.sleep(min(pause, left))
                    pause = min(5.0, pause * 1.5)
                if phase != "COMPLETED":
                    try:
                        job.raise_if_error()
                    except pyvo.dal.DALQueryError as exc:
                        raise TapError(f"TAP service {self.tap_url}: async job {phase}: {exc}") from exc
                return job.fetch_result().to_table()
            finally:
                try:
                    job.delete()
                except Exception:  # noqa: BLE001 - cleanup only
                    pass
        return self._with_retries("async query", run)

    def execute(self, query: str, *, overflow: str = "async"):
        """Run ADQL: synchronously first; as an async job when the sync query fails or
        overflows ``sync_maxrec`` (``overflow="none"``: None then). Returns an astropy Table."""
        try:
            result = self._service().search(query, maxrec=self.sync_maxrec)
            if getattr(result, "query_status", "OK") == "OVERFLOW":
                if overflow == "none":
                    return None
                log.info("sync TAP result overflowed %d rows; running an async job", self.sync_maxrec)
                return self._run_async(query)
            return result.to_table()
        except Exception as exc:  # noqa: BLE001 - a refused query is final, anything else goes async
            import pyvo

            if isinstance(exc, pyvo.dal.DALQueryError):
                raise TapError(f"TAP service {self.tap_url} refused the query: {exc}") from exc
            log.warning("sync TAP query failed (%s); running an async job", exc)
            return self._run_async(query)

    def query(self, q: RegionQuery) -> ObservationSet:
        """Observations matching ``q`` (newest version per file, ``max_images`` gate), asked in
        time windows of at most about ``sync_maxrec`` rows when there are more."""
        frames = [rows_to_frame(table, self.data_root) for table in self._pieces(q)]
        found = [f for f in frames if len(f)] or frames[:1]  # an empty window's columns have no types
        return finish(pd.concat(found, ignore_index=True) if len(found) > 1 else found[0], q, self.tap_url)

    def _pieces(self, q: RegionQuery):
        """The answer's rows, one table at a time: the whole, or its time windows."""
        whole = self.execute(adql(q), overflow="none")
        if whole is not None:
            yield whole
            return
        span = self.execute(f"SELECT COUNT(*) AS n, MIN(p.time_bounds_lower) AS t0, MAX(p.time_bounds_lower) AS t1 "
                            f"{_FROM} WHERE {_where(q)}")
        n, t0, t1 = int(span["n"][0]), float(span["t0"][0]), float(span["t1"][0])
        windows = time_windows(t0, t1, 2 * -(-n // self.sync_maxrec))  # twice as many: uneven times fit
        log.info("TAP answer of %d rows; asking it in %d time windows", n, len(windows))
        for piece in windows:
            yield self.execute(adql(q, piece=piece))
