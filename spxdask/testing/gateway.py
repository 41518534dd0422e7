"""A real ``dask-gateway-server`` on loopback (local process backend), for tests and demos.

It launches schedulers and workers with the ``dask scheduler`` / ``dask worker`` commands
(distributed >= 2026.6 no longer has ``dask-scheduler`` / ``dask-worker``, which the server
still uses by default).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CONFIG = """
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{web}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.ClusterConfig.scheduler_cmd = ["{bin}/dask", "scheduler"]
c.ClusterConfig.worker_cmd = ["{bin}/dask", "worker"]
c.ClusterConfig.cluster_max_workers = {max_workers}
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1.5 G"
c.ClusterConfig.scheduler_memory = "1 G"
c.ClusterConfig.idle_timeout = 600
c.LocalBackend.clusters_directory = {clusters!r}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalGateway:
    """Start ``dask-gateway-server`` on three free loopback ports; use as a context manager.

    ``settings`` is the dask config that points spxdask (and dask-gateway) at it.
    """

    def __init__(self, max_workers: int = 2):
        self.password = secrets.token_hex(16)
        self.api, self.web, self.tcp = _free_port(), _free_port(), _free_port()
        self.max_workers = max_workers
        self._dir = tempfile.TemporaryDirectory(prefix="spxdask-gateway-")
        self._proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.web}"

    @property
    def settings(self) -> dict:
        return {"spxdask.gateway.address": self.address, "spxdask.gateway.proxy_address": f"gateway://127.0.0.1:{self.tcp}",
                "spxdask.gateway.auth": "basic", "spxdask.gateway.workers": self.max_workers,
                "gateway.auth.kwargs": {"username": "spxdask", "password": self.password}}

    def __enter__(self) -> LocalGateway:
        d = Path(self._dir.name)
        (d / "config.py").write_text(CONFIG.format(api=self.api, web=self.web, tcp=self.tcp, password=self.password,
                                                   bin=Path(sys.executable).parent, max_workers=self.max_workers,
                                                   clusters=str(d / "clusters")))
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        self._log = open(d / "server.log", "w")
        self._proc = subprocess.Popen([str(Path(sys.executable).parent / "dask-gateway-server"), "-f", str(d / "config.py")],
                                      cwd=d, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dask-gateway-server exited: {(d / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.address}/api/health", timeout=1)
                time.sleep(0.25)  # the proxy needs a moment after its first answer
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("dask-gateway-server did not come up in 60 s")

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._log.close()
        self._dir.cleanup()
