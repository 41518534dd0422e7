"""Kills that land on work: a worker is killed while it runs a task of the stage under test,
after some of that stage's tasks have finished and before all have; the test can then check
that it happened that way (which worker, what it was running, that the scheduler lost it)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin


class Progress(SchedulerPlugin):
    """Scheduler-side counts of the tasks whose key starts with ``prefix``: how many finished,
    which run where, the most the scheduler held at once (``peak``); and which workers the
    scheduler lost."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.done = 0
        self.running: dict[str, str] = {}
        self.removed: list[str] = []
        self.live: set = set()
        self.peak = 0
        self.lock = threading.Lock()
        self.scheduler = None

    def transition(self, key, start, finish, *args, stimulus_id: str, **kwargs) -> None:
        name = key[0] if isinstance(key, tuple) else key
        if not str(name).startswith(self.prefix):
            return
        with self.lock:
            if finish == "processing":
                self.running[key] = self.scheduler.tasks[key].processing_on.address
            elif start == "processing":
                self.running.pop(key, None)
            if finish == "memory":
                self.done += 1
            if finish == "forgotten":
                self.live.discard(key)
            else:
                self.live.add(key)
                self.peak = max(self.peak, len(self.live))

    def remove_worker(self, scheduler, worker: str, **kwargs) -> None:
        with self.lock:
            self.removed.append(worker)


@dataclasses.dataclass
class Kill:
    """What a kill hit: the worker, its process, how many of the stage's tasks it was running
    and how many had finished on the whole cluster."""
    address: str = ""
    pid: int = 0
    running: int = 0
    done: int = 0

    def landed(self, progress: Progress) -> bool:
        """The worker was running the stage's work after some of it had finished (so the stage
        was part done), and the scheduler lost that worker."""
        return self.running > 0 and self.done > 0 and self.address in progress.removed


@contextlib.contextmanager
def watched(prefix: str) -> Iterator[tuple[Client, Progress]]:
    """A two-worker cluster whose scheduler counts the tasks of ``prefix``."""
    progress = Progress(prefix)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        progress.scheduler = cluster.scheduler  # in this process: added directly, read directly
        cluster.scheduler.add_plugin(progress)
        yield client, progress


@contextlib.contextmanager
def killed_worker(prefix: str, *, after: int = 1, timeout: float = 120.0) -> Iterator[tuple[Client, Kill, Progress]]:
    """A two-worker cluster on which one worker is SIGKILLed once ``after`` tasks of
    ``prefix`` have finished, while it runs one of them. Yields the client, the :class:`Kill`
    (filled in when it happens) and the :class:`Progress`."""
    kill = Kill()
    with watched(prefix) as (client, progress):
        stop = threading.Event()
        killer = threading.Thread(target=_kill_when, args=(client, progress, after, kill, stop, timeout), daemon=True)
        killer.start()
        try:
            yield client, kill, progress
        finally:
            stop.set()
            killer.join()


def _kill_when(client: Client, progress: Progress, after: int, kill: Kill, stop: threading.Event,
               timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        with progress.lock:
            done, busy = progress.done, list(progress.running.values())
        if done >= after and busy:
            address = max(set(busy), key=busy.count)
            pid = client.run(os.getpid, workers=[address])[address]
            with progress.lock:
                running = sum(a == address for a in progress.running.values())
            os.kill(pid, signal.SIGKILL)
            kill.address, kill.pid, kill.running, kill.done = address, pid, running, done
            return
        time.sleep(0.005)


def wait_for(ready: Callable[[], bool], timeout: float = 120.0) -> bool:
    """Poll ``ready`` until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.005)
    return False
