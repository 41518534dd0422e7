"""A static HTTP file server on loopback (aiohttp, with Range support) that counts the bytes
it sends, so tests can check how much of a file a client really read."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiohttp import web


class FileServer:
    """Serve ``root`` at ``http://127.0.0.1:<port>/`` from a background thread.

    Use as a context manager; ``bytes_sent`` totals the body bytes of all responses.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.bytes_sent = 0
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        self.requests += 1
        if request.method != "HEAD":
            self.bytes_sent += response.content_length or 0

    async def _start(self) -> None:
        app = web.Application()
        app.on_response_prepare.append(self._count)
        app.router.add_static("/", self.root)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FileServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
