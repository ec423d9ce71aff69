"""The HTTP side: uvicorn (uvloop + httptools) serving the REST shim in a thread.

The socket is bound in the constructor, so ``port`` is known (``--http-port 0`` picks a
free one) before ``start()``; IPv6 bind addresses work too. ``stop()`` lets in-flight
requests finish within the grace period, then closes the shim's worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from accounts_grpc.app import App


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with TCP_NODELAY on every connection.

    uvicorn writes a response's head and body separately; without TCP_NODELAY, Nagle's
    algorithm holds the body back until the client ACKs the head, which a client that
    delays its ACKs does after 40 ms: every keep-alive request took ~44 ms instead of
    well under one.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # not TCP (a Unix socket)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


class HttpServer:
    def __init__(self, app: App) -> None:
        from accounts_grpc.rest.gateway import create_http_app

        settings = app.settings
        self._sock = _bind(settings.bind_host, settings.http_port)
        self.port: int = self._sock.getsockname()[1]
        self.gateway = create_http_app(app)
        config = uvicorn.Config(
            self.gateway,
            loop="uvloop",
            http=NoDelayHttpToolsProtocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
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
