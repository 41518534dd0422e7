"""One place that decides where spxdask computes: a running Client, a scheduler address, Dask
Gateway, or a LocalCluster sized to the machine; plus run bookkeeping (dashboard link,
progress, performance report) and the ``spxdask`` section of the dask configuration.

The package's defaults (``spxdask.yaml``) are read here and consulted behind the user's dask
configuration; they are never written into it, so importing spxdask leaves ``dask.config`` as
the user set it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.config
import yaml
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["CompileLoops", "compile_ahead", "compute", "gather", "get_client", "progress_line", "run_context",
           "running_client", "setting"]

_DEFAULTS = Path(__file__).with_name("spxdask.yaml")


@functools.cache
def _defaults() -> dict:
    return yaml.safe_load(_DEFAULTS.read_text())["spxdask"]


def setting(key: str, *, default: Any = None) -> Any:
    """A value of the ``spxdask`` dask-config section, e.g. ``setting("gateway.address")``:
    the user's dask configuration (files, ``DASK_SPXDASK__...`` variables, ``dask.config.set``)
    over the package defaults (a section given as a mapping is merged key by key).

    Parameters
    ----------
    key : str
        Dotted, below ``spxdask``.
    default : object
        When neither the user nor the package sets it.

    Returns
    -------
    object
    """
    fallback: Any = _defaults()
    for part in key.split("."):
        fallback = fallback.get(part, default) if isinstance(fallback, dict) else default
    value = dask.config.get(f"spxdask.{key}", default=None)
    if value is None:
        return fallback
    if isinstance(value, dict) and isinstance(fallback, dict):
        return {**fallback, **value}
    return value


def get_client(*, scheduler: str | None = None, gateway: bool = False, dashboard_address: str | None = None,
               log_level: int = logging.WARNING):
    """The Client to run on.

    Parameters
    ----------
    scheduler : str, optional
        ``"tcp://host:8786"`` (or any scheduler address) to connect to; ``"gateway"`` for Dask
        Gateway; ``"local"`` for a new LocalCluster. Default: the ``spxdask.scheduler``
        setting, else a running Client, else a new LocalCluster sized to the machine.
    gateway : bool
        Same as ``scheduler="gateway"``.
    dashboard_address : str, optional
        Where a new LocalCluster's dashboard listens; default the ``spxdask.local.dashboard_address``
        setting, the loopback interface (a local cluster listens on nothing else).
    log_level : int
        The least level a new LocalCluster's workers log (distributed's ``silence_logs``).

    Returns
    -------
    distributed.Client
    """
    from distributed import Client, LocalCluster
    from distributed import get_client as running

    scheduler = "gateway" if gateway else (scheduler or setting("scheduler"))
    if scheduler is None:
        try:
            return running()
        except ValueError:
            scheduler = "local"
    if scheduler == "gateway":
        return _gateway_client()
    if scheduler == "local":
        local = setting("local", default={})
        cluster = LocalCluster(n_workers=local.get("n_workers") or os.cpu_count(),
                               threads_per_worker=local.get("threads_per_worker") or 1,
                               memory_limit=local.get("memory_limit", "auto"), host="127.0.0.1", silence_logs=log_level,
                               dashboard_address=dashboard_address or local.get("dashboard_address") or "127.0.0.1:8787")
        return Client(cluster)
    return Client(scheduler)


def _gateway_client():
    try:
        from dask_gateway import Gateway
    except ImportError as exc:
        raise RuntimeError("Dask Gateway needs the dask-gateway package: pip install 'spxdask[gateway]'") from exc
    gateway = setting("gateway", default={})
    auth = gateway.get("auth")
    gw = Gateway(address=gateway.get("address"), proxy_address=gateway.get("proxy_address"), auth=auth)
    cluster = gw.new_cluster(**(gateway.get("cluster_options") or {}))
    cluster.scale(int(gateway.get("workers") or 2))
    return cluster.get_client()


def running_client():
    """The distributed Client of this context, or None."""
    from distributed import get_client as running

    try:
        return running()
    except ValueError:
        return None


def compute(*collections, client=None):
    """Compute Dask collections on ``client`` (or the running Client, or local threads),
    with a progress bar in terminals and notebooks when the ``spxdask.progress`` setting is on.

    Parameters
    ----------
    *collections
        Dask collections or delayed objects.
    client : distributed.Client, optional

    Returns
    -------
    tuple
        Their results.
    """
    client = client or running_client()
    if client is None:
        if _show_progress():
            from dask.diagnostics import ProgressBar

            with ProgressBar(minimum=2):
                return dask.compute(*collections, scheduler="threads")
        return dask.compute(*collections, scheduler="threads")
    return tuple(gather(client.compute(list(collections)), client))


def gather(futures: list, client) -> list:
    """The results of distributed ``futures``, with a progress bar as :func:`compute` (watching
    ``client``'s scheduler, not the default client's).

    Parameters
    ----------
    futures : list of distributed.Future
    client : distributed.Client

    Returns
    -------
    list
    """
    if _show_progress():
        from distributed import progress

        scheduler = client.scheduler.address
        try:
            progress(futures, notebook=_in_notebook(), multi=False, scheduler=scheduler)
        except ImportError:  # a notebook without ipywidgets: a text bar instead
            progress(futures, notebook=False, multi=False, scheduler=scheduler)
    return client.gather(futures, direct=_direct(client))


def _direct(client) -> bool | None:
    """Read results straight from the workers when they all listen on this machine's loopback
    (a LocalCluster): distributed's default relays them through the scheduler, for workers a
    client cannot reach (as behind a Dask Gateway), at a copy per result (a 45 MB partial cube:
    0.4 s against 0.03 s). A client's own ``direct_to_workers`` wins."""
    import ipaddress

    from distributed.comm.addressing import get_address_host

    if client.direct_to_workers is not None:
        return client.direct_to_workers
    workers = client.scheduler_info(n_workers=-1)["workers"]
    try:
        return bool(workers) and all(ipaddress.ip_address(get_address_host(a)).is_loopback for a in workers)
    except ValueError:  # a host name, or an in-process address
        return None


def progress_line(label: str, done: int, total: int) -> None:
    """A one-line progress count (``label: done/total``), redrawn in place, for loops that
    drive futures themselves; shown where :func:`compute` shows its bars.

    Parameters
    ----------
    label : str
    done, total : int
    """
    if _show_progress():
        print(f"\r{label}: {done}/{total}", end="\n" if done == total else "", flush=True)


def _in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _show_progress() -> bool:
    """Progress bars where someone watches: a terminal or a notebook, not a log file."""
    return setting("progress", default=True) and (sys.stdout.isatty() or _in_notebook())


@contextlib.contextmanager
def run_context(name: str, report: str | Path, *, client=None) -> Iterator[None]:
    """Print the dashboard link of stage ``name`` and save its performance report at ``report``
    (when the ``spxdask.performance_report`` setting is on and a Client runs).

    Parameters
    ----------
    name : str
        The stage.
    report : path
        Where its performance report goes (:meth:`spxdask.layout.RunLayout.performance_report`).
    client : distributed.Client, optional

    Yields
    ------
    None
    """
    from distributed import performance_report

    client = client or running_client()
    if client is None or not setting("performance_report", default=True):
        yield
        return
    link = getattr(client, "dashboard_link", None)
    if link:
        print(f"{name}: Dask dashboard at {link}", flush=True)
    try:
        import bokeh  # noqa: F401 - the report is drawn with bokeh
    except ImportError:
        logging.getLogger(__name__).warning("no performance report for %s: bokeh is not installed", name)
        yield
        return
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    recorder = performance_report(filename=str(report))
    recorder.__enter__()
    try:
        yield
    finally:
        try:
            recorder.__exit__(None, None, None)
        except Exception as exc:  # noqa: BLE001 - a missing report never fails a finished run
            logging.getLogger(__name__).warning("no performance report for %s: %s", name, exc)


class CompileLoops(WorkerPlugin):
    """Have each worker run ``compile`` (a function that compiles numba loops, once per
    process) on a thread of its own when the plugin is registered, and every worker that joins
    later (an adaptive Gateway or Kubernetes cluster) when it starts.

    No profiler samples that thread: a compilation inside a task makes the profile a stage's
    performance report fetches deeper than ``dask.sizeof`` can walk.

    Parameters
    ----------
    compile : callable
        Importable by reference (a module-level function), taking no argument.
    """

    idempotent = True  # registered again by each stage: set up once per worker

    def __init__(self, compile: Callable[[], None]):
        self.compile = compile
        self.name = f"spxdask-compile-{compile.__module__}"

    async def setup(self, worker) -> None:
        await asyncio.to_thread(self.compile)


def compile_ahead(client, compile: Callable[[], None]) -> None:
    """Register :class:`CompileLoops` for ``compile`` on ``client``'s workers (at once where it is).

    A worker that cannot compile is named in a warning: its tasks compile what they call.

    Parameters
    ----------
    client : distributed.Client
    compile : callable
        See :class:`CompileLoops`.
    """
    try:
        client.register_plugin(CompileLoops(compile))
    except Exception as exc:  # noqa: BLE001 - the tasks still compile what they call
        logging.getLogger(__name__).warning("workers did not compile spxdask's loops ahead: %r", exc)
