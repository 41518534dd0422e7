"""A static HTTP file server on loopback (aiohttp, with Range support) with switchable faults
(:mod:`.faults`), counting the bytes it sends so tests can check how much of a file a client
really read."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .faults import FaultyServer


class FileServer(FaultyServer):
    """Serve ``root`` at ``http://127.0.0.1:<port>/`` from a background thread (directories as
    HTML link lists); use as a context manager."""

    def __init__(self, root: str | Path, slow_seconds: float = 5.0):
        super().__init__(slow_seconds)
        self.root = Path(root).resolve()

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
        return await self._faulty(request, path.read_bytes(), fault, "application/fits")
