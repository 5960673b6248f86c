"""`fnrelay gc-proxy`: a loopback HTTP door to a fnrelay broker for the official Globus Compute SDK.

The official SDK can be pointed at a self-hosted service only by GLOBUS_SDK_ENVIRONMENT=local,
which means plain HTTP to http://localhost:5000, nothing else. This proxy listens there and
forwards every request, as it came, to the user's broker over TLS (broker URL and CA from
fnrelay's own configuration), so the official SDK reaches any broker with environment
variables alone.

It listens on the loopback interface only, by design: the plain-HTTP leg carries bearer
tokens and client secrets, which must never cross a network in clear, and the proxy adds no
authentication of its own (the broker checks every request), so only programs of this machine
may use it.

Uvicorn and Starlette serve (they come with the broker extra), urllib3 (under requests, an SDK
dependency) forwards: both stream bodies in both directions, so nothing is held in memory.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import urllib3

from fnrelay.amqp import ca_bundle
from fnrelay.errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

#: The one address GLOBUS_SDK_ENVIRONMENT=local reaches (globus_compute_sdk's environments).
HOST = "127.0.0.1"
PORT = 5000
#: Bytes per chunk read from the broker's answer.
CHUNK = 64 * 1024
#: Connect and read timeouts towards the broker (seconds); long-polls of the SDK are short.
TIMEOUT = urllib3.Timeout(connect=30, read=300)
#: Headers of one connection only (RFC 9110, 7.6.1), never forwarded; Host names the broker.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade", "host"})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def check_upstream(broker_url: str) -> str:
    """The broker URL without a trailing slash; plain HTTP only to a loopback broker, since the
    tokens this proxy forwards must not cross a network in clear."""
    parts = urlsplit(broker_url)
    if parts.scheme == "https":
        return broker_url.rstrip("/")
    if parts.scheme == "http" and _is_loopback(parts.hostname or ""):
        return broker_url.rstrip("/")
    raise ConfigurationError(
        f"fnrelay gc-proxy forwards over TLS only: the broker URL {broker_url!r} must start "
        "with https:// (plain http:// only for a broker on this machine)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def forward_headers(pairs: Any) -> list[tuple[str, str]]:
    """The end-to-end headers of `pairs` ((name, value) items): hop-by-hop ones and those the
    Connection header names are dropped."""
    items = [(str(k), str(v)) for k, v in pairs]
    named = {token.strip().lower() for k, v in items if k.lower() == "connection"
             for token in v.split(",")}
    return [(k, v) for k, v in items if k.lower() not in HOP_BY_HOP | named]


def _gateway_error(status: int, message: str) -> Response:
    """An answer the official SDK shows as a GlobusAPIError with `message`."""
    from starlette.responses import JSONResponse

    print(f"fnrelay gc-proxy: {message}", file=sys.stderr, flush=True)
    code = "BAD_GATEWAY" if status == 502 else "GATEWAY_TIMEOUT"
    return JSONResponse({"code": code, "message": message, "http_status_code": status},
                        status_code=status)


class Forwarder:
    """Sends one request to the broker and streams its answer back."""

    def __init__(self, upstream: str, cafile: str | None = None):
        self.upstream = check_upstream(upstream)
        context = ssl.create_default_context(cafile=cafile)
        # Retries and redirects are the SDK's business: the proxy must not replay a POST.
        self.pool = urllib3.PoolManager(ssl_context=context, retries=False, timeout=TIMEOUT)

    async def handle(self, request: Request) -> Response:
        from anyio import from_thread, to_thread
        from starlette.responses import StreamingResponse

        scope = request.scope
        target = self.upstream + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = forward_headers(request.headers.items())
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        chunks = request.stream()

        def body() -> Iterator[bytes]:  # the client's body, read as the broker takes it
            while True:
                try:
                    chunk = from_thread.run(chunks.__anext__)
                except StopAsyncIteration:
                    return
                if chunk:
                    yield chunk

        def send() -> urllib3.BaseHTTPResponse:
            return self.pool.urlopen(request.method, target, body=body() if has_body else None,
                                     headers=dict(headers), preload_content=False,
                                     decode_content=False, redirect=False)

        try:
            answer = await to_thread.run_sync(send)
        except urllib3.exceptions.TimeoutError as e:
            return _gateway_error(504, f"the broker at {self.upstream} did not answer: {e}")
        except urllib3.exceptions.SSLError as e:
            return _gateway_error(502, f"cannot verify the TLS certificate of the broker at "
                                       f"{self.upstream} ({e}); set FNRELAY_CA_BUNDLE to the "
                                       "PEM file of the CA that signed it")
        except urllib3.exceptions.HTTPError as e:
            return _gateway_error(502, f"cannot reach the broker at {self.upstream}: {e}")
        response = StreamingResponse(_stream(answer), status_code=answer.status)
        response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in forward_headers(answer.headers.items())]
        return response


async def _stream(answer: urllib3.BaseHTTPResponse) -> AsyncIterator[bytes]:
    """The broker's answer chunk by chunk; its connection goes back to the pool at the end."""
    from anyio import to_thread

    try:
        while chunk := await to_thread.run_sync(answer.read, CHUNK):
            yield chunk
    finally:
        answer.release_conn()


def make_app(upstream: str, cafile: str | None = None) -> Any:
    """The ASGI app: every path and method goes to `upstream`."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    forward = Forwarder(upstream, cafile)
    return Starlette(routes=[Route("/{path:path}", forward.handle, methods=METHODS)])


def bind(port: int) -> socket.socket:
    """A listening socket on HOST:port, or a clear error (port 5000 is often taken)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        hint = (" (another program uses it; the official SDK reaches only port 5000, so stop "
                "that program)" if e.errno == errno.EADDRINUSE else "")
        raise ConfigurationError(f"cannot listen on {HOST}:{port}: {e.strerror}{hint}") from None
    sock.listen(128)
    return sock


def serve(broker_url: str, port: int = PORT, cafile: str | None = None) -> None:
    """Forward HOST:port to `broker_url` until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError("fnrelay gc-proxy needs uvicorn and starlette: "
                                 "pip install 'fnrelay[broker]'") from None
    cafile = cafile or ca_bundle()
    app = make_app(broker_url, cafile)
    sock = bind(port)
    print(f"fnrelay gc-proxy: http://{HOST}:{port} -> {check_upstream(broker_url)}"
          f" (CA: {cafile or 'the system store'}); for the official SDK: export "
          f"GLOBUS_SDK_ENVIRONMENT=local GLOBUS_SDK_SERVICE_URL_AUTH=http://localhost:{port}/",
          file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
