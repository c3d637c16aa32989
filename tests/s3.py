"""A real S3 API for the tests: moto's server in a process of its own, and a proxy in front that throttles it.

:func:`s3_server` starts ``tests/s3server.py`` on a free loopback port (as
the browser tests start Chromium) and yields an :class:`S3` that knows its
address and the credentials of the user it made; :meth:`S3.env` is the
environment a job's standard chain reads them from. :class:`Proxy` forwards
every request to it unchanged (signatures included) but answers some with
``503 SlowDown`` or ``500 InternalError``, as S3 does under load.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3:
    port: int
    key: str
    secret: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The variables of the standard credential chain (and endpoint) a job reads, as a deployment sets them."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint or self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def upload(self, folder: Path, bucket: str, prefix: str = "") -> list[str]:
        """Every file under ``folder`` to ``s3://bucket/prefix…`` (same relative keys); their URLs."""
        c = self.client()
        with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
            c.create_bucket(Bucket=bucket)
        urls = []
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                key = prefix + p.relative_to(folder).as_posix()
                c.upload_file(str(p), bucket, key)
                urls.append(f"s3://{bucket}/{key}")
        return urls


@contextlib.contextmanager
def s3_server(*bulk: str, open_: bool = False) -> Iterator[S3]:
    """moto's S3 server on loopback for the duration; ``bulk``: ``BUCKET/PREFIX:N`` to fill.

    IAM is enforced (the user may not list the bucket ``locked``) unless ``open_``,
    where any key is taken and presigned addresses work.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "tests.s3server", "--port", str(port)] + (["--open"] if open_ else [])
    for b in bulk:
        cmd += ["--bulk", b]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen(
        cmd, cwd=PROJECT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"moto's server did not start (exit {proc.wait(10)})")
        info = json.loads(line)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield S3(port, info["key"], info["secret"])
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


class Proxy:
    """A loopback HTTP proxy in front of an S3 endpoint that throttles and fails requests on purpose.

    ``throttle_every``: every n-th request is answered ``503 SlowDown``;
    ``broken``: requests whose path contains one of these are always
    answered ``500 InternalError``. ``counts`` tallies what it did.
    """

    def __init__(self, target_port: int, *, throttle_every: int = 0, broken: tuple[str, ...] = ()) -> None:
        self.target_port, self.throttle_every, self.broken = target_port, throttle_every, broken
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.counts["requests"] += 1
                    n = proxy.counts["requests"]
                if any(b in self.path for b in proxy.broken):
                    with proxy._lock:
                        proxy.counts["failed"] += 1
                    return self._answer(500, _INTERNAL)
                if proxy.throttle_every and n % proxy.throttle_every == 0:
                    with proxy._lock:
                        proxy.counts["throttled"] += 1
                    return self._answer(503, _SLOW_DOWN)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=60)
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():  # Host included: the signature covers it
                    conn.putheader(k, v)
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
