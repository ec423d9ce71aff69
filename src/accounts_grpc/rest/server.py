"""The HTTP side: uvicorn (uvloop + httptools) serving the REST shim in a thread.

The socket is bound in the constructor, so ``port`` is known (``--http-port 0`` picks a
free one) before ``start()``; IPv6 bind addresses work too. ``stop()`` lets in-flight
requests finish within the grace period, then closes the shim's worker threads.

What a hostile client can hold is bounded, each by a setting:
- a request's head (request line and headers) is at most ``http_max_header_bytes`` and
  ``http_max_headers`` fields, else 431 and the connection closes (httptools itself
  buffers a header line without limit, so bytes are counted as they arrive);
- it must arrive within ``http_header_timeout`` of the connection opening or of the
  request's first byte (a slowloris client is closed, not waited for);
- the body within ``http_body_timeout`` (408, in the gateway), an idle keep-alive
  connection closes after ``http_idle_timeout``;
- a request that is not HTTP/1.1 httptools can parse gets 400 in the same error shape,
  and uvicorn's warning of it is logged at most once a second.
uvicorn's ``proxy_headers`` is off: the client's address is the peer's, and only the
pipeline reads X-Forwarded-For, and only from ``--trusted-proxies``.

With ``--tls-cert-file`` the port speaks HTTPS only (uvicorn's ``ssl_*`` settings; the
head timeout starts once the TLS handshake is done, which asyncio bounds at 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from accounts_grpc import tracing
from accounts_grpc.config import Settings
from accounts_grpc.rest.errors import error_response, shim_status
from accounts_grpc.rest.gateway import GatewayConfig, create_http_app
from accounts_grpc.rpc.interceptor import ThrottledLog


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int
    max_fields: int
    timeout: float


def _refusal(status: int, code: str, message: str, reason: str) -> bytes:
    """A whole HTTP/1.1 response in the shim's error shape, closing the connection."""
    _code, headers, body = error_response(shim_status(code, message, reason), status)
    phrase = {400: b"Bad Request", 408: b"Request Timeout",
              431: b"Request Header Fields Too Large"}[status]
    lines = [b"HTTP/1.1 %d %s" % (status, phrase)]
    lines += [k + b": " + v for k, v in headers]
    lines += [b"content-length: %d" % len(body), b"connection: close", b"", body]
    return b"\r\n".join(lines)


class _ThrottledWarnings:
    """uvicorn's protocol logger with its warnings at most one a second: it warns of every
    request httptools cannot parse (431 refusals included), which any client sends at
    will, so a flood of them cannot flood the log."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self.warning = ThrottledLog(logger).warning

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


_PROTOCOL_LOG = _ThrottledWarnings(logging.getLogger("uvicorn.error"))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY and bounded request heads.

    TCP_NODELAY: uvicorn writes a response's head and body separately; without it,
    Nagle's algorithm holds the body back until the client ACKs the head, which a client
    that delays its ACKs does after 40 ms: every keep-alive request took ~44 ms instead
    of well under one.

    Heads: bytes are counted from a request's first byte until its headers are
    complete, and fields as they are parsed; past a limit the answer is 431 and the
    connection closes. A head not complete within the timeout (counted from the
    connection or from the request's first byte) gets 408 and the connection closes.
    """

    limits = HeadLimits(16384, 100, 10.0)  # replaced per server by HttpServer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # not TCP (a Unix socket)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self.logger = _PROTOCOL_LOG  # type: ignore[assignment]  # a Logger to uvicorn
        self._in_head = True
        self._head_bytes = 0
        self._head_fields = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self._refused:
            self._refuse(408, "DEADLINE_EXCEEDED",
                         f"the request head did not arrive within {self.limits.timeout:g} s",
                         "REQUEST_HEAD_TIMEOUT")

    def _refuse(self, status: int, code: str, message: str, reason: str) -> None:
        self._refused = True
        self._disarm_head_timer()
        if not self.transport.is_closing():
            self.transport.write(_refusal(status, code, message, reason))
            self.transport.close()

    def _too_large(self, what: str) -> None:
        self._refuse(431, "RESOURCE_EXHAUSTED", f"the request has {what}",
                     "REQUEST_HEADERS_TOO_LARGE")

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
            self._arm_head_timer()
        super().data_received(data)
        if self._in_head and not self._refused and self._head_bytes > self.limits.max_bytes:
            # the head is still incomplete and already too large: httptools would buffer on
            self._too_large(f"a head larger than {self.limits.max_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        """Not HTTP/1.1 that httptools can parse: 400 in the shim's error shape (uvicorn's
        is plain text), unless a refusal has answered already."""
        if not self._refused:
            self._refuse(400, "INVALID_ARGUMENT", "the request is not valid HTTP/1.1",
                         "MALFORMED_HTTP_REQUEST")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a new request on a kept-alive connection
            self._in_head = True
            self._head_bytes = 0
        self._head_fields = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_bytes:
            self._too_large(f"a URL longer than {self.limits.max_bytes} bytes")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_fields:
            self._too_large(f"more than {self.limits.max_fields} header fields")
            raise _Refused
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size + len(name) + len(value) > self.limits.max_bytes:
            self._too_large(f"headers larger than {self.limits.max_bytes} bytes")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)


class _Refused(Exception):
    """Stops httptools' parse of a refused request (it becomes HttpParserError)."""


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; ``reuse_port``: shared with the other workers of
    ``serve --processes N`` through SO_REUSEPORT (the kernel spreads connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6 and host in ("::", "[::]"):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise SystemExit(f"accounts-grpc: cannot listen on {host}:{port} for HTTP: {e}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS settings from ours (the files are checked at start, config.read_tls):
    TLS only on the port, and with a client CA, a client certificate signed by it."""
    if not settings.tls_cert_file:
        return {}
    options: dict[str, Any] = {"ssl_certfile": settings.tls_cert_file,
                               "ssl_keyfile": settings.tls_key_file}
    if settings.tls_client_ca_file:
        options.update(ssl_ca_certs=settings.tls_client_ca_file,
                       ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


class HttpServer:
    """The REST gateway ``gateway_config`` describes, served on ``settings``' HTTP address
    with its head, idle and shutdown limits. ``reuse_port``: listen with SO_REUSEPORT, as
    each worker of ``serve --processes N`` does."""

    def __init__(self, settings: Settings, gateway_config: GatewayConfig, *,
                 reuse_port: bool = False) -> None:
        self._sock = _bind(settings.bind_host, settings.http_port, reuse_port=reuse_port)
        self.port: int = self._sock.getsockname()[1]
        self.gateway = create_http_app(gateway_config)
        protocol = type("HttpProtocol", (GuardedHttpToolsProtocol,), {
            "limits": HeadLimits(settings.http_max_header_bytes, settings.http_max_headers,
                                 settings.http_header_timeout)})
        config = uvicorn.Config(
            tracing.asgi(self.gateway),  # OpenTelemetry's middleware, only while tracing is on
            loop="uvloop",
            http=protocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For only from --trusted-proxies (pipeline)
            timeout_keep_alive=settings.http_idle_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
            **_tls_options(settings),
        )
        # uvicorn installs no signal handlers off the main thread; App handles SIGTERM.
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        def run() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[self._sock]))
            except BaseException as e:  # surfaced by start() below
                self._error = e

        self._thread = threading.Thread(target=run, name="http-server", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self._server.started:
            raise SystemExit(f"accounts-grpc: the HTTP server did not start: {self._error!r}")

    def stop(self, grace: float) -> None:
        self._server.config.timeout_graceful_shutdown = max(0.1, grace)  # type: ignore[assignment]
        self._server.should_exit = True
        if self._thread:
            self._thread.join(grace + 5)
        self.gateway.close()
        self._sock.close()
