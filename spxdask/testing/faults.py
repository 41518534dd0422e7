"""Loopback servers that inject faults: the aiohttp app on a background thread, the queue of
faults and the faulty answers, shared by the HTTP file server and the S3 server's front.

:class:`ServiceFront` puts the faults in front of any HTTP service (a TAP service).

Faults (queued per path, or for any path with ``"*"``; each GET takes one, each request of
any method at a :class:`ServiceFront`):
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
import time
from typing import NamedTuple

import aiohttp
from aiohttp import web

#: hop-by-hop and length headers a front does not pass on (aiohttp sets its own; Host stays:
#: signed S3 requests cover it)
_DROP = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


class Request(NamedTuple):
    """One request a server answered: what was asked, the answer's status, and when
    (``time.monotonic()``, as the answer started)."""
    method: str
    path: str
    status: int
    at: float


class FaultyServer:
    """An aiohttp app on ``http://127.0.0.1:<port>/`` served from a background thread; use as
    a context manager. Subclasses answer requests in :meth:`_handle` and pass the answers that
    should fail through :meth:`_faulty`. ``bytes_sent`` totals response bodies; ``log`` lists a
    :class:`Request` per request."""

    def __init__(self, slow_seconds: float = 5.0):
        self.slow_seconds = slow_seconds
        self.bytes_sent = 0
        self.requests = 0
        self.log: list[Request] = []
        self._faults: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
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

    async def _forward(self, request: web.Request, upstream: str) -> tuple[int, bytes, dict]:
        """Send ``request`` on to the server at ``upstream`` (``http://host:port``): its status,
        body (as sent: compressed if it was) and headers (the hop-by-hop ones aside; a HEAD's
        Content-Length kept)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        async with self._session.request(request.method, f"{upstream}{request.path_qs}", headers=headers,
                                         data=await request.read(), allow_redirects=False) as answer:
            data = await answer.read()
            # the body goes on as it came (still compressed): so does the header saying how
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP or k.lower() == "content-encoding"}
            if request.method == "HEAD" and "Content-Length" in answer.headers:  # the object's size
                kept["Content-Length"] = answer.headers["Content-Length"]
            return answer.status, data, kept

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
        self.log.append(Request(request.method, request.path, response.status, time.monotonic()))
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
        if self._session is not None:
            session = self._session
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(session.close()))
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class ServiceFront(FaultyServer):
    """A faulty front for any HTTP service at ``upstream`` (e.g. a TAP service): every request
    is passed on, except those :meth:`add_faults` spoils, of any method (``path`` relative to
    the root, e.g. ``"tap/sync"``, or ``"*"``); ``log`` shows what reached it."""

    def __init__(self, upstream: str, slow_seconds: float = 5.0):
        super().__init__(slow_seconds)
        self.upstream = "/".join(upstream.split("/", 3)[:3])  # scheme://host:port

    def url_of(self, upstream_url: str) -> str:
        """The front's address of ``upstream_url``."""
        return self.url + upstream_url[len(self.upstream):]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._next_fault(request.path.lstrip("/"))
        status, data, headers = await self._forward(request, self.upstream)
        if fault is None:
            return web.Response(status=status, body=data if request.method != "HEAD" else None, headers=headers)
        return await self._faulty(request, data, fault, headers.get("Content-Type", "text/plain"))
