"""The gRPC server: grpcio's sync server (DESIGN.md measured it faster here than grpc.aio).

Every open stream (grpcurl holds a reflection stream open for each call it makes) holds
one worker thread for its whole life (health ``Watch`` streams are served without one),
so the pool is sized for streams too (``grpc_workers``, default 64), and
``maximum_concurrent_rpcs`` bounds what is in flight, so overload answers a fast
RESOURCE_EXHAUSTED rather than queueing behind streams that never end. The bound is
never more than the pool: a call admitted beyond it would wait for a thread that an
open stream may hold for ever.

Draining (SIGTERM/SIGINT, ``App.stop``): new calls are refused, health turns
NOT_SERVING for "" and every service (open ``Watch`` streams are told, then ended, so
they do not hold the drain), and in-flight calls get ``shutdown_grace`` seconds to
finish before they are cancelled.

Reflection serves the proto comments too (``grpcurl describe`` shows them), and answers
for methods (``pkg.Service.Method``), which protobuf's own descriptor pool does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from accounts_grpc.config import Settings
from accounts_grpc.rpc.interceptor import PipelineInterceptor
from accounts_grpc.rpc.pipeline import Pipeline

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: our descriptors *with* their comments (protoc's source info), which the generated
#: ``_pb2`` modules leave out; shared with the OpenAPI generator of the REST shim
COMMENTED_DESCRIPTORS = Path(__file__).parent.parent / "rest" / "descriptors.binpb"

log = logging.getLogger(__name__)


def commented_files(commented: Path = COMMENTED_DESCRIPTORS) -> dict[str, bytes]:
    """File name → its FileDescriptorProto with comments, for each file of ``commented``
    that is exactly the live one (the one being served) apart from its comments."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(commented.read_bytes()).file
    except (OSError, DecodeError):
        log.info("no %s: reflection serves descriptors without comments", commented.name)
        return {}
    live_pool = descriptor_pool.Default()
    out: dict[str, bytes] = {}
    stale: list[str] = []
    for f in files:
        try:
            live = live_pool.FindFileByName(f.name)
        except KeyError:
            continue
        bare = descriptor_pb2.FileDescriptorProto()
        bare.CopyFrom(f)
        bare.ClearField("source_code_info")
        if bare == descriptor_pb2.FileDescriptorProto.FromString(live.serialized_pb):
            out[f.name] = f.SerializeToString()
        else:
            stale.append(f.name)
    if stale:
        log.warning("%s is stale for %s: reflection serves those without comments",
                    commented.name, ", ".join(stale))
    return out


class _Reflection(reflection.ReflectionServicer):
    """grpcio's reflection, serving our files with their comments, so that ``grpcurl
    describe`` shows every element's documentation. (The generated ``_pb2`` modules carry
    no comments, and a DescriptorPool drops them, so they are swapped in on the way out;
    a file whose commented copy differs from the live one is served as it lives.)"""

    def __init__(self, service_names: Iterable[str], commented: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self._commented = commented

    def _with_comments(self, resp: Any) -> Any:
        if self._commented and resp.HasField("file_descriptor_response"):
            files = resp.file_descriptor_response.file_descriptor_proto
            for i, raw in enumerate(files):
                name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                if name in self._commented:
                    files[i] = self._commented[name]
        return resp

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        resp = super()._file_containing_symbol(request, fully_qualified_name)
        if resp.HasField("error_response"):
            # protobuf's (upb) pool does not find methods ("pkg.Service.Method"), which
            # `grpcurl describe pkg.Service.Method` asks for: answer with the service's file
            service, _, method = fully_qualified_name.rpartition(".")
            try:
                found = method in self._pool.FindServiceByName(service).methods_by_name
            except KeyError:
                found = False
            if found:
                resp = super()._file_containing_symbol(request, service)
        return self._with_comments(resp)

    def _file_containing_extension(
        self, request: Any, containing_type: str, extension_number: int
    ) -> Any:
        return self._with_comments(
            super()._file_containing_extension(request, containing_type, extension_number)
        )


class _HealthServicer(health.HealthServicer):
    """grpcio's reference health servicer, plus: end every open ``Watch`` when draining.

    A ``Watch`` stream is an in-flight RPC, so left open it would hold the drain for the
    whole grace. Watchers first receive NOT_SERVING, then their stream ends (OK); a
    client that watches again is refused, which health-checking clients read as down.
    """

    def end_watches(self) -> None:
        # grpcio-health-checking's own bookkeeping; if a release renames it, watches are
        # simply left to the grace (they are cancelled then), never an error
        watchers = getattr(self, "_send_response_callbacks", {})
        with self._lock:
            callbacks = [cb for cbs in watchers.values() for cb in cbs]
        for send in callbacks:
            send(None)


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
        self.health = _HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            _Reflection(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME],
                commented_files(),
            ),
            self.server,
        )
        host = settings.bind_host
        if ":" in host and not host.startswith("["):  # an IPv6 address, e.g. "::"
            host = f"[{host}]"
        self.port = self.server.add_insecure_port(f"{host}:{settings.grpc_port}")
        if self.port == 0:
            raise SystemExit(
                f"accounts-grpc: cannot listen on {settings.bind_host}:{settings.grpc_port}"
            )
        self._stopped: threading.Event | None = None

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

    def begin_stop(self, grace: float) -> threading.Event:
        """Drain without waiting: health NOT_SERVING (watchers are told, then released),
        new calls refused, in-flight calls get ``grace`` seconds, then are cancelled.
        Returns the event set once every call has ended."""
        if self._stopped is None:
            self._stopped = self.server.stop(grace)  # new calls are refused from here on
            # every status NOT_SERVING (open watches, being in flight, are told once, then
            # end), and nothing sets it back
            self.health.enter_graceful_shutdown()
            self.health.end_watches()
        return self._stopped

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds."""
        self.begin_stop(grace).wait(grace + 5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 1.0  # idle workers leave at once
        for t in list(getattr(self._executor, "_threads", ())):
            t.join(max(0.0, deadline - time.monotonic()))

    def busy_workers(self) -> int:
        """Worker threads still running a handler after ``stop`` (cut off at the grace)."""
        return sum(t.is_alive() for t in getattr(self._executor, "_threads", ()))
