"""An S3-compatible server on loopback (moto's server mode), laid out like the public
``nasa-irsa-spherex`` bucket and read anonymously through s3fs."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

BUCKET = "nasa-irsa-spherex"


class S3Server:
    """Serve files from a folder as ``s3://nasa-irsa-spherex/<relative path>``; use as a
    context manager. ``storage_options`` are what fsspec/s3fs need to reach it anonymously."""

    def __init__(self, root: str | Path, bucket: str = BUCKET):
        self.root = Path(root)
        self.bucket = bucket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict:
        return {"anon": True, "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    def __enter__(self) -> S3Server:
        import boto3
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=self.bucket)
        for path in sorted(self.root.rglob("*.fits")):
            s3.upload_file(str(path), self.bucket, path.relative_to(self.root).as_posix(),
                           ExtraArgs={"ACL": "public-read"})  # a public bucket, like IRSA's
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.stop()
