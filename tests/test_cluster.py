"""Where spxdask runs: a LocalCluster of worker processes, a real Dask Gateway on loopback,
the dashboard's endpoints during a run, and the spxdask dask-config section."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.request

import dask
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from spxdask.batch import BatchConfig, BatchPipeline
from spxdask.cluster import get_client
from spxdask.testing.gateway import LocalGateway

from .conftest import lightcurve_rows

REGION = dict(center_ra=150.1, center_dec=2.2, radius=0.3)


def _store(path):
    return lightcurve_rows(path)


@pytest.fixture(scope="module")
def single_process(sky_qr2, tmp_path_factory):
    """The reference result: the whole pipeline in this process, on local threads."""
    out = tmp_path_factory.mktemp("single")
    BatchPipeline(BatchConfig(**REGION, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive), output_dir=out)).run_all()
    return _store(out)


def test_local_cluster_of_processes_equals_single_process(sky_qr2, single_process, tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        seen: set[str] = set()
        stop = threading.Event()

        def watch():  # the dashboard's Prometheus endpoint, polled while the run goes on
            url = client.dashboard_link.replace("/status", "/metrics")
            while not stop.wait(0.2):
                try:
                    text = urllib.request.urlopen(url, timeout=2).read().decode()
                except OSError:
                    continue
                seen.update(line.split('task_prefix_name="')[1].split('"')[0]
                            for line in text.splitlines() if 'task_prefix_name="' in line)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        # copied, so that the download stage runs on the cluster too
        cfg = BatchConfig(**REGION, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive), output_dir=tmp_path,
                          copy_images=True)
        BatchPipeline(cfg, client=client).run_all()
        stop.set()
        watcher.join()
    pd.testing.assert_frame_equal(_store(tmp_path), single_process)
    assert {"fetch", "photometry"} <= seen
    assert (tmp_path / "performance-report-extract.html").stat().st_size > 10_000


def test_dask_gateway_run_equals_single_process(sky_qr2, single_process, tmp_path):
    with LocalGateway(max_workers=2) as gateway, dask.config.set(gateway.settings):
        client = get_client(gateway=True)
        try:
            client.wait_for_workers(1, timeout=120)
            cfg = BatchConfig(**REGION, catalog_path=sky_qr2.catalog, archive=str(sky_qr2.archive), output_dir=tmp_path)
            summary = BatchPipeline(cfg, client=client).run_all()
            workers = client.scheduler_info()["workers"]
        finally:
            cluster = client.cluster
            client.close()
            cluster.shutdown()
    assert summary.failed == 0 and workers
    pd.testing.assert_frame_equal(_store(tmp_path), single_process)
    # the gateway password never reaches the outputs
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".yaml", ".parquet"):
            assert gateway.password.encode() not in path.read_bytes()


def test_settings_come_from_the_environment():
    code = "from spxdask.cluster import setting; print(setting('local.threads_per_worker'), setting('irsa.data_root'))"
    env = dict(os.environ, DASK_SPXDASK__LOCAL__THREADS_PER_WORKER="3", DASK_SPXDASK__IRSA__DATA_ROOT="http://mirror/")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3", "http://mirror/"]
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert default.split() == ["1", "https://irsa.ipac.caltech.edu/ibe/data/spherex/"]


def test_get_client_reuses_arunning_client():
    with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        assert get_client() is client
        with get_client(scheduler=cluster.scheduler_address) as by_address:
            assert by_address is not client and by_address.scheduler.address == client.scheduler.address


def _listening(client) -> set[str]:
    """The interfaces the scheduler of ``client``'s LocalCluster and its dashboard listen on."""
    scheduler = client.cluster.scheduler
    hosts = {sock.getsockname()[0] for sock in scheduler.http_server._sockets.values()}
    return hosts | {scheduler.address.split("://")[1].rsplit(":", 1)[0]}


def test_a_local_cluster_listens_on_loopback_only_unless_asked():
    """The dashboard shows file names, progress and worker logs: a local run opens nothing to
    the network (distributed's default dashboard listens on 0.0.0.0:8787)."""
    with get_client(scheduler="local", dashboard_address="127.0.0.1:0") as client:
        try:
            assert _listening(client) == {"127.0.0.1"} and client.dashboard_link.startswith("http://127.0.0.1:")
        finally:
            client.cluster.close()
    with get_client(scheduler="local", dashboard_address="0.0.0.0:0") as client:  # asked for
        try:
            assert "0.0.0.0" in _listening(client)
        finally:
            client.cluster.close()
    code = ("from spxdask.cluster import setting; print(setting('local.dashboard_address'))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "127.0.0.1:8787"
