"""A proxy in front of olah for tests: counts requests, serves Range, slows or drops a download.

olah's mirror mode answers every file request with 200 and the whole file; the real Hub
(and its CDN) answers a Range request with 206. The proxy adds that, records what each
request asked for and how many bytes it got, and can trickle or cut one file's body so a
test can interrupt a pull at a known point.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Seen:
    """One request the proxy forwarded."""

    method: str
    path: str
    range_start: int
    sent: int = 0


@dataclass
class HubProxy:
    """Forwards to olah; records requests; serves Range; can slow chosen files down."""

    url: str
    upstream: str
    requests: list[Seen] = field(default_factory=list)
    slow_suffix: str | None = None
    slow_delay: float = 0.0
    chunk: int = 64 * 1024
    drop_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def file_gets(self, suffix: str = "") -> list[Seen]:
        """GET requests for file content (``/resolve/``) whose path ends with ``suffix``."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(suffix)
            ]

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self.lock:
            self.requests.clear()


_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "date",
    "server",
}


def proxy_handler(proxy: HubProxy) -> type[http.server.BaseHTTPRequestHandler]:
    """The request handler class of a proxy forwarding to ``proxy.upstream``."""
    upstream = urlsplit(proxy.upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self, method: str) -> None:
            range_header = self.headers.get("Range", "")
            start = int(range_header[6:].split("-")[0]) if range_header.startswith("bytes=") else 0
            seen = Seen(method, self.path, start)
            with proxy.lock:
                proxy.requests.append(seen)
            conn = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=60)
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in {"host", "range", "accept-encoding"}
            }
            conn.request(method, self.path, headers=headers)
            response = conn.getresponse()
            body = response.read() if method == "GET" else b""
            conn.close()
            status = response.status
            out_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
            if method == "GET" and status == 200 and "/resolve/" in self.path and start:
                total = len(body)
                body = body[start:]
                status = 206
                out_headers.append(("Content-Range", f"bytes {start}-{total - 1}/{total}"))
            length = response.getheader("Content-Length") if method == "HEAD" else str(len(body))
            self.send_response(status)
            for key, value in out_headers:
                self.send_header(key, value)
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            slow = proxy.slow_suffix is not None and self.path.endswith(proxy.slow_suffix)
            try:
                for i in range(0, len(body), proxy.chunk):
                    self.wfile.write(body[i : i + proxy.chunk])
                    self.wfile.flush()
                    seen.sent += len(body[i : i + proxy.chunk])
                    if slow and proxy.drop_after is not None and seen.sent >= proxy.drop_after:
                        proxy.drop_after = None  # once: the connection dies mid-body
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if slow and proxy.slow_suffix is not None:  # read live: a test may let it finish
                        time.sleep(proxy.slow_delay)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:
            self._forward("GET")

        def do_HEAD(self) -> None:
            self._forward("HEAD")

    return Handler
