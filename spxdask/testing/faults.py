"""Loopback servers that inject faults: the aiohttp app on a background thread, the queue of
faults and the faulty answers, shared by the HTTP file server and the S3 server's front.

Faults (queued per path, or for any path with ``"*"``; each GET takes one):
``500``/``502``/``503``/``504``/``404`` (status; the server's own error body), ``429`` (with
``Retry-After: 1``), ``"reset"`` (connection dropped after half the body), ``"truncate"``
(half the body, then close, Content-Length announcing the whole), ``"short"`` (half the body
with a matching Content-Length), ``"slow"`` (stalls ``slow_seconds`` before the body),
``"corrupt"`` (right length, one byte flipped).
"""

from __future__ import annotations

import asyncio
import collections
import threading

from aiohttp import web


class FaultyServer:
    """An aiohttp app on ``http://127.0.0.1:<port>/`` served from a background thread; use as
    a context manager. Subclasses answer requests in :meth:`_handle` and pass the answers that
    should fail through :meth:`_faulty`. ``bytes_sent`` totals response bodies; ``log`` lists
    ``(method, path, status)`` per request."""

    def __init__(self, slow_seconds: float = 5.0):
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
        """Queue faults for GET requests of ``path`` (relative to the root, or ``"*"``)."""
        self._faults[path.lstrip("/")].extend(faults)

    def _next_fault(self, path: str):
        for key in (path, "*"):
            if self._faults.get(key):
                return self._faults[key].popleft()
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def _error_body(self, status: int) -> tuple[str, str]:
        """(body, content type) of an injected error answer."""
        return f"fault {status}", "text/plain"

    async def _faulty(self, request: web.Request, data: bytes, fault, content_type: str) -> web.StreamResponse:
        """The answer ``data`` spoiled by ``fault``."""
        if isinstance(fault, int):
            headers = {"Retry-After": "1"} if fault == 429 else {}
            body, kind = self._error_body(fault)
            return web.Response(status=fault, text=body, content_type=kind, headers=headers)
        if fault == "corrupt":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            return web.Response(body=data, content_type=content_type)
        if fault == "short":
            return web.Response(body=data[: len(data) // 2], content_type=content_type)
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
            return web.Response(body=data, content_type=content_type)
        # "reset" / "truncate": announce the whole body, send half, drop the connection
        response = web.StreamResponse(headers={"Content-Length": str(len(data)), "Content-Type": content_type})
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        transport = request.transport
        assert transport is not None  # a request being answered has its connection
        transport.close() if fault == "reset" else transport.abort()
        return response

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        self.requests += 1
        self.log.append((request.method, request.path, response.status))
        if request.method != "HEAD":
            self.bytes_sent += response.content_length or 0

    async def _start(self) -> None:
        app = web.Application(client_max_size=2**31)
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

    def __enter__(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
