"""The gRPC server: grpcio's sync server (DESIGN.md measured it faster here than grpc.aio).

Every open stream (a grpcurl reflection stream, a health Watch) holds one worker thread
for its whole life, so the pool is sized for streams too (``grpc_workers``, default
64), and ``maximum_concurrent_rpcs`` bounds what is in flight, so overload answers a
fast RESOURCE_EXHAUSTED rather than queueing behind streams that never end.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from accounts_grpc.config import Settings
from accounts_grpc.rpc.interceptor import PipelineInterceptor
from accounts_grpc.rpc.pipeline import Pipeline

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class GrpcServer:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        servicers: Iterable[tuple[object, object]],
        service_names: Iterable[str],
        extra_handlers: Iterable[grpc.GenericRpcHandler] = (),
    ) -> None:
        self._settings = settings
        self._executor = ThreadPoolExecutor(
            max_workers=settings.grpc_workers, thread_name_prefix="grpc-worker"
        )
        self.server = grpc.server(
            self._executor,
            interceptors=[PipelineInterceptor(pipeline)],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        for add, servicer in servicers:
            add(servicer, self.server)  # type: ignore[operator]
        if extra_handlers:
            self.server.add_generic_rpc_handlers(tuple(extra_handlers))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = self.server.add_insecure_port(f"{settings.bind_host}:{settings.grpc_port}")
        if self.port == 0:
            raise SystemExit(
                f"accounts-grpc: cannot listen on {settings.bind_host}:{settings.grpc_port}"
            )

    def start(self) -> None:
        self.server.start()
        self.set_serving(True)

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds."""
        self.set_serving(False)
        self.server.stop(grace).wait()
        self._executor.shutdown(wait=False, cancel_futures=True)
