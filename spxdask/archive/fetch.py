"""Fetch L2 files into ``images/D<n>/<file name>``: async fsspec downloads, one coroutine pool
per bag partition, atomic (temporary name, then rename), verified by size and md5, resumable,
with retries (exponential backoff with jitter; 429 Retry-After honoured) inside a time budget.
Every file ends either verified on disk or in the returned table with its reason."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import random
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import fsspec.asyn
import pandas as pd

from .._config import Config, require
from .observation import Observation

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*\.fits$")
RESULT_COLUMNS = ("obs_id", "detector", "url", "path", "status", "error", "bytes", "attempts", "seconds")


@dataclass(frozen=True)
class FetchConfig(Config):
    """Download behaviour.

    Parameters
    ----------
    concurrency : int
        Downloads at once per partition.
    retries : int
        Retries of a file at most.
    backoff : float
        Waits between attempts grow as backoff x 2^attempt times a random factor in [0.5, 1.5] (s).
    max_backoff : float
        The longest wait (s).
    budget : float
        Seconds per file in all, counted from its first attempt (not while it waits for its turn).
    timeout : float
        One request's silence at most (seconds without data).
    verify_md5 : bool
        Check each file against the archive's checksum when it publishes one.
    """

    concurrency: int = 4
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    budget: float = 900.0
    timeout: float = 60.0
    verify_md5: bool = True

    def __post_init__(self) -> None:
        for name, least, what in (("concurrency", 1, "positive"), ("retries", 0, "non-negative")):
            value = getattr(self, name)
            require(self, int(value) == value and value >= least, name, f"must be a {what} integer")
        for name in ("backoff", "max_backoff", "budget", "timeout"):
            require(self, getattr(self, name) > 0, name, "must be > 0")


class FetchError(RuntimeError):
    """A download failed for good; ``retry`` tells whether trying again could help."""

    def __init__(self, message: str, retry: bool, wait: float | None = None):
        super().__init__(message)
        self.retry = retry
        self.wait = wait


class BudgetSpent(Exception):
    """An attempt cut short because the file's time budget ran out (not a network timeout)."""


def destination(obs: Observation, image_dir: str | Path) -> Path:
    """``<image_dir>/D<n>/<file name>``; names from the network that are not plain L2 file
    names (path separators, ``..``, odd characters) are replaced by ``<obs_id>_D<n>.fits``."""
    name = obs.filename
    if not _SAFE_NAME.match(name) or ".." in name:
        name = re.sub(r"[^A-Za-z0-9_+-]", "_", f"{obs.obs_id}_D{obs.detector}") + ".fits"
    folder = Path(image_dir) / f"D{int(obs.detector)}"
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"refusing a download path outside {folder}: {name!r}")
    return path


def md5_of(path: str | Path) -> str:
    """Hex md5 digest of a file, read in 4 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


def verified(path: Path, obs: Observation, check_md5: bool = True) -> str | None:
    """None when ``path`` is complete for ``obs``, else what is wrong with it."""
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if obs.size is not None and size != obs.size:
        return f"size {size} != expected {obs.size}"
    if check_md5 and obs.checksum and md5_of(path) != obs.checksum.lower().removeprefix("md5:"):
        return "md5 mismatch"
    return None


def _retry_after(headers) -> float | None:
    value = (headers or {}).get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _classify(exc: BaseException) -> FetchError:
    import aiohttp

    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, aiohttp.ClientResponseError):
        transient = exc.status == 429 or exc.status >= 500 or exc.status == 408
        return FetchError(f"HTTP {exc.status} {exc.message}", transient,
                          _retry_after(exc.headers) if exc.status in (429, 503) else None)
    if isinstance(exc, FileNotFoundError):
        return FetchError(f"not found ({exc})", False)
    if isinstance(exc, PermissionError):
        return FetchError(f"permission denied ({exc})", False)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return FetchError("timed out", True)
    if isinstance(exc, (aiohttp.ClientError, ConnectionError, OSError)):
        return FetchError(f"{type(exc).__name__}: {exc}", True)
    return FetchError(f"{type(exc).__name__}: {exc}", False)


def _filesystem(url: str, storage_options: dict, timeout: float):
    """One cached filesystem per worker process, protocol and options (fsspec caches
    instances)."""
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    options = dict(storage_options)
    if protocol in ("http", "https"):
        import aiohttp

        options.setdefault("client_kwargs", {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                                                              sock_read=timeout)})
    elif protocol in ("s3", "s3a"):
        options["config_kwargs"] = {"connect_timeout": timeout, "read_timeout": timeout,
                                    **options.get("config_kwargs", {})}
    return fsspec.filesystem(protocol, **options), protocol


async def _attempt(obs: Observation, dest: Path, config: FetchConfig, storage_options: dict, budget: float) -> None:
    """One download of ``obs`` into ``dest`` within ``budget`` seconds."""
    fs, protocol = _filesystem(obs.url, storage_options, config.timeout)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        if protocol == "file":
            await asyncio.to_thread(shutil.copyfile, fs._strip_protocol(obs.url), tmp)
        else:
            try:
                async with asyncio.timeout(budget) as window:
                    await fs._get_file(obs.url, str(tmp))
            except TimeoutError:
                if window.expired():
                    raise BudgetSpent from None
                raise
        problem = verified(tmp, obs, config.verify_md5)
        if problem:
            raise FetchError(f"downloaded file is bad: {problem}", True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


async def _fetch_one(obs: Observation, image_dir: Path, config: FetchConfig, storage_options: dict,
                     gate: asyncio.Semaphore) -> dict:
    row = {"obs_id": obs.obs_id, "detector": obs.detector, "url": obs.url, "path": None, "error": None,
           "bytes": 0, "attempts": 0}
    try:
        dest = destination(obs, image_dir)
    except ValueError as exc:
        return {**row, "status": "failed", "error": str(exc), "seconds": 0.0}
    row["path"] = str(dest)
    if verified(dest, obs, config.verify_md5) is None:
        return {**row, "status": "skipped", "bytes": dest.stat().st_size, "seconds": 0.0}
    dest.parent.mkdir(parents=True, exist_ok=True)
    async with gate:
        t0 = time.monotonic()  # the budget starts when the file's turn comes, not in the queue
        for attempt in range(config.retries + 1):
            row["attempts"] = attempt + 1
            try:
                await _attempt(obs, dest, config, storage_options, config.budget - (time.monotonic() - t0))
                return {**row, "status": "ok", "bytes": dest.stat().st_size, "seconds": time.monotonic() - t0}
            except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
                if isinstance(exc, BudgetSpent):  # say so, keeping the last real error
                    err = FetchError(f"{row['error'] or 'no answer'} (time budget of {config.budget:g} s spent)", False)
                else:
                    err = _classify(exc)
                row["error"] = str(err)
                backoff = min(config.max_backoff, config.backoff * 2**attempt) * random.uniform(0.5, 1.5)
                wait = err.wait if err.wait is not None else backoff
                if not err.retry or attempt == config.retries or time.monotonic() - t0 + wait > config.budget:
                    break
                await asyncio.sleep(wait)
    return {**row, "status": "failed", "seconds": time.monotonic() - t0}


def fetch_partition(observations: list[Observation], image_dir: str, config: FetchConfig,
                    storage_options: dict | None = None) -> list[dict]:
    """Download one partition's files concurrently on fsspec's I/O event loop."""
    async def run():
        gate = asyncio.Semaphore(config.concurrency)
        return await asyncio.gather(*(_fetch_one(o, Path(image_dir), config, storage_options or {}, gate)
                                      for o in observations))
    return list(fsspec.asyn.sync(fsspec.asyn.get_loop(), run))


def fetch(bag, image_dir: str | Path, config: FetchConfig = FetchConfig(), *,
          storage_options: dict | None = None, client=None) -> pd.DataFrame:
    """Fetch every Observation of a Dask bag (one ``fetch-*`` task per partition, on ``client``,
    by default the running Client or local threads: downloads wait on the network, not the
    GIL).

    Parameters
    ----------
    bag : dask.bag.Bag
        :class:`Observation` records (:meth:`ObservationSet.to_bag`).
    image_dir : path
        The files go to ``<image_dir>/D<n>/``.
    config : FetchConfig
        Concurrency, retries and budget.
    storage_options : dict, optional
        fsspec options for the source.
    client : distributed.Client, optional

    Returns
    -------
    DataFrame
        One row per file: status ``ok`` / ``skipped`` (already complete) / ``failed`` with the error.
    """
    from ..cluster import compute

    (rows,) = compute(bag.map_partitions(fetch_partition, str(image_dir), config, storage_options, token="fetch"),
                      client=client)
    return pd.DataFrame(list(rows), columns=list(RESULT_COLUMNS))
