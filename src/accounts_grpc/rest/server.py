"""The HTTP side: uvicorn (uvloop + httptools) serving the REST shim in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from accounts_grpc.app import App


class HttpServer:
    def __init__(self, app: App) -> None:
        from accounts_grpc.rest.gateway import create_http_app

        settings = app.settings
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((settings.bind_host, settings.http_port))
        self._sock.listen(2048)
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            create_http_app(app),
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=int(settings.shutdown_grace) or 1,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        def run() -> None:
            asyncio.run(self._server.serve(sockets=[self._sock]))

        self._thread = threading.Thread(target=run, name="http-server", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            threading.Event().wait(0.01)

    def stop(self, grace: float) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(grace + 5)

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - debugging aid
        raise AttributeError(name)
