"""A static HTTP file server on loopback (aiohttp, with Range support) with switchable faults,
counting the bytes it sends so tests can check how much of a file a client really read.

Faults (queued per path, or for any path with ``"*"``; each request takes one):
``500``/``502``/``503``/``504``/``404`` (status), ``429`` (with ``Retry-After: 1``),
``"reset"`` (connection dropped after half the body), ``"truncate"`` (half the body, then
close, Content-Length announcing the whole file), ``"short"`` (half the body with a matching
Content-Length), ``"slow"`` (stalls ``slow_seconds`` before the body), ``"corrupt"`` (right
length, one byte flipped).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from pathlib import Path

from aiohttp import web


class FileServer:
    """Serve ``root`` at ``http://127.0.0.1:<port>/`` from a background thread.

    Use as a context manager. ``bytes_sent`` totals response bodies; ``log`` lists
    ``(method, path, status)`` per request.
    """

    def __init__(self, root: str | Path, slow_seconds: float = 5.0):
        self.root = Path(root).resolve()
        self.slow_seconds = slow_seconds
        self.bytes_sent = 0
        self.requests = 0
        self.log: list[tuple[str, str, int]] = []
        self._faults: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add_faults(self, path: str, faults: list) -> None:
        """Queue faults for requests of ``path`` (relative to root, or ``"*"``)."""
        self._faults[path.lstrip("/")].extend(faults)

    def _next_fault(self, rel: str):
        for key in (rel, "*"):
            if self._faults.get(key):
                return self._faults[key].popleft()
        return None

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        self.requests += 1
        self.log.append((request.method, request.path, response.status))
        if request.method != "HEAD":
            self.bytes_sent += response.content_length or 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["tail"]
        path = (self.root / rel).resolve()
        if self.root not in path.parents and path != self.root:
            raise web.HTTPForbidden()
        if path.is_dir():
            links = "".join(f'<a href="/{(path / p.name).relative_to(self.root).as_posix()}'
                            f'{"/" if p.is_dir() else ""}">{p.name}</a>\n'
                            for p in sorted(path.iterdir()))
            return web.Response(text=f"<html><body>\n{links}</body></html>", content_type="text/html")
        if not path.is_file():
            raise web.HTTPNotFound()
        fault = self._next_fault(rel) if request.method == "GET" else None
        if fault is None:
            return web.FileResponse(path)
        return await self._faulty(request, path, fault)

    async def _faulty(self, request: web.Request, path: Path, fault) -> web.StreamResponse:
        if isinstance(fault, int):
            headers = {"Retry-After": "1"} if fault == 429 else {}
            return web.Response(status=fault, text=f"fault {fault}", headers=headers)
        data = path.read_bytes()
        if fault == "corrupt":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            return web.Response(body=data, content_type="application/fits")
        if fault == "short":
            return web.Response(body=data[: len(data) // 2], content_type="application/fits")
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
            return web.Response(body=data, content_type="application/fits")
        # "reset" / "truncate": announce the whole file, send half, drop the connection
        response = web.StreamResponse(headers={"Content-Length": str(len(data)), "Content-Type": "application/fits"})
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        transport = request.transport
        assert transport is not None  # a request being answered has its connection
        transport.close() if fault == "reset" else transport.abort()
        return response

    async def _start(self) -> None:
        app = web.Application()
        app.on_response_prepare.append(self._count)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
