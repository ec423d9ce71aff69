"""The ceiling: a bare grpcio sync server with one generic-handler unary echo.

Same ``grpc.server`` + ``ThreadPoolExecutor`` shape (and worker count) as the real server,
but no interceptor, no protobuf (raw bytes in, the same bytes out), no reflection or
health. Run as its own process: ``python -m bench.echo_server --port P --workers N``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

METHOD = "/bench.Echo/Echo"


def _echo(request: bytes, _context: grpc.ServicerContext) -> bytes:
    return request


class _Handler(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        self._h = grpc.unary_unary_rpc_method_handler(_echo)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._h if details.method == METHOD else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=64)
    args = p.parse_args()
    executor = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="echo-worker")
    server = grpc.server(executor, handlers=[_Handler()], options=[("grpc.so_reuseport", 0)])
    if server.add_insecure_port(f"{args.host}:{args.port}") == 0:
        raise SystemExit(f"echo server: cannot listen on {args.host}:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(0.5).wait()


if __name__ == "__main__":
    main()
