"""An S3-compatible server on loopback (moto's server mode), laid out like the public
``nasa-irsa-spherex`` bucket and read anonymously through s3fs, behind a front that injects
faults as S3 does (503 SlowDown, 500 InternalError, connection resets, truncated bodies, stalls;
the vocabulary of :mod:`.faults`)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from .faults import FaultyServer

BUCKET = "nasa-irsa-spherex"
_S3_ERRORS = {500: ("InternalError", "We encountered an internal error. Please try again."),
              503: ("SlowDown", "Please reduce your request rate."),
              404: ("NoSuchKey", "The specified key does not exist.")}


class S3Server(FaultyServer):
    """Serve files from a folder as ``s3://nasa-irsa-spherex/<relative path>``; use as a
    context manager. ``storage_options`` are what fsspec/s3fs need to reach it anonymously;
    :meth:`add_faults` (an object key, or ``"*"`` for any) spoils the next GETs of objects
    (listings are never spoiled)."""

    def __init__(self, root: str | Path, bucket: str = BUCKET, slow_seconds: float = 5.0):
        super().__init__(slow_seconds)
        self.root = Path(root)
        self.bucket = bucket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self._moto_port = s.getsockname()[1]
        self._moto: Any = None

    @property
    def endpoint(self) -> str:
        """The faulty front's address (moto behind it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict:
        return {"anon": True, "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` as object ``key`` (public-read, like the bucket's files)."""
        self._client().put_object(Bucket=self.bucket, Key=key, Body=data, ACL="public-read")

    def _client(self):
        import boto3

        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self._moto_port}", region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def _error_body(self, status: int) -> tuple[str, str]:
        code, message = _S3_ERRORS.get(status, ("ServiceUnavailable", "Service unavailable."))
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>fault</RequestId></Error>", "application/xml")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        status, data, answer = await self._forward(request, f"http://127.0.0.1:{self._moto_port}")
        key = request.path.lstrip("/").removeprefix(f"{self.bucket}/")
        is_object = request.path.startswith(f"/{self.bucket}/") and request.method == "GET" and status in (200, 206)
        fault = self._next_fault(key) if is_object else None
        if fault is None:
            return web.Response(status=status, body=data if request.method != "HEAD" else None, headers=answer)
        return await self._faulty(request, data, fault, answer.get("Content-Type", "binary/octet-stream"))

    def __enter__(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self._moto_port, verbose=False)
        self._moto.start()
        s3 = self._client()
        s3.create_bucket(Bucket=self.bucket)
        for path in sorted(self.root.rglob("*.fits")):
            s3.upload_file(str(path), self.bucket, path.relative_to(self.root).as_posix(),
                           ExtraArgs={"ACL": "public-read"})  # a public bucket, like IRSA's
        super().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self._moto is not None:
            self._moto.stop()
