"""spxdask benchmarks: ``python -m benchmarks [NAME ...]`` runs the registered benchmarks,
prints a table and writes ``benchmarks/results/<timestamp>.json``.

Every benchmark measures spxdask against a baseline in the same run and reports the ratio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

REGISTRY: dict[str, Callable[[], list[Result]]] = {}


@dataclass
class Result:
    """One measured case: ``seconds`` for spxdask, ``baseline_seconds`` for the baseline it is
    compared with (same inputs, same run); ``ratio`` = baseline / spxdask (>1: spxdask faster)."""

    benchmark: str
    case: str
    seconds: float
    baseline: str = ""
    baseline_seconds: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if self.baseline_seconds is None else self.baseline_seconds / self.seconds

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def register(name: str):
    """Decorator: register a benchmark function returning a list of :class:`Result`."""
    def deco(fn):
        REGISTRY[name] = fn
        return fn
    return deco


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Poll each worker's process memory (``peak``: bytes per worker) and the scheduler's
    (``scheduler``: bytes; with a LocalCluster, the client's process) while a block runs."""

    def __init__(self, client):
        self.client, self.peak, self.scheduler, self._stop = client, {}, 0, threading.Event()

    def _poll(self):
        while not self._stop.wait(0.25):
            for addr, w in self.client.scheduler_info(n_workers=-1)["workers"].items():
                self.peak[addr] = max(self.peak.get(addr, 0), w["metrics"]["memory"])
            self.scheduler = max(self.scheduler, self.client.run_on_scheduler(_rss))

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
