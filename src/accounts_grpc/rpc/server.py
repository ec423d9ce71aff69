"""The gRPC server: grpcio's sync server (DESIGN.md measured it faster here than grpc.aio).

How grpcio's sync server takes a call (grpc/_server.py): one serving thread polls the
completion queue; for each new call it runs the interceptor's ``intercept_service``
(holding the server's lock) to get the handler, then submits the handler to a thread
pool: the one the handler's behavior names in ``experimental_thread_pool`` (the hook
grpcio-health-checking uses too), else the server's. The request message is read, and
the handler runs, in that worker. So admission is decided on one thread, one call after
another, and nothing there may block or wait.

Calls run on three pools (``interceptor.Lanes``), so that each kind of call can only ever
wait for its own kind:

- **unary**: ``--grpc-workers`` calls run at once (fewer if
  ``--grpc-max-concurrent-rpcs`` says so); up to ``--grpc-max-queued-calls`` more calls may
  wait for a place. Waiting is safe: a unary call waits only for other unary calls,
  never for a stream that may not end. Past that bound ``intercept_service`` answers
  RESOURCE_EXHAUSTED with ErrorInfo OVERLOADED and RetryInfo (1 s). A call takes a place
  only once its request message has come (it waits for it on one of
  ``--grpc-max-unsent`` more threads): see "The request message" below.
- **streams** (reflection, health ``Watch``, any non-unary handler): one thread per
  stream, ``--grpc-max-streams`` of them, and as many streams open at once (a
  non-blocking ``Watch`` holds no thread but counts until it ends);
  ``--grpc-max-streams-per-peer`` from one client address (checked as the stream starts,
  since ``intercept_service`` does not know the peer). Past either: RESOURCE_EXHAUSTED
  with ErrorInfo TOO_MANY_STREAMS and RetryInfo. grpcurl holds a reflection stream open
  for each call it makes; those can no longer take the threads unary calls run on.
- **refusals**: a small reserve (``REFUSAL_WORKERS``) that answers those refusals, so a
  refusal never waits behind admitted calls (and, declared stream-stream, not for the
  client's request message either).

So the threads are unary workers + stream cap + a small reserve. Each pool counts the
calls it holds from grpcio's submission to the call's end; as admission and submission
both happen on the serving thread, the count read at admission is exact. grpcio's own
``maximum_concurrent_rpcs`` stays as a hard backstop above all that (twice what the
pools admit): past it grpcio refuses on the serving thread with its bare
RESOURCE_EXHAUSTED, which bounds the queue of refusals in a flood. The server's default
pool serves nothing while grpcio honours the hook; it is sized like the three together
and makes threads only when used, so a grpcio that ignored the hook would still serve
(without the separate limits).

The request message: grpcio reads a unary-request call's one message on its worker, so
a client that opened calls and never sent it held a worker each until their deadline.
Every such method is served as request-streaming and the interceptor reads the message
(``interceptor.Unsent``): a call still without it after a second keeps a thread beside
the workers', at most ``--grpc-max-unsent-per-peer`` from one client address (while it
has that many, its new calls are refused at once with TOO_MANY_PENDING_CALLS) and
``--grpc-max-unsent`` in all, each until ``--grpc-message-timeout`` (DEADLINE_EXCEEDED);
any more end after the second with RESOURCE_EXHAUSTED. What a per-address limit cannot
stop remains: many addresses together can keep ``--grpc-max-unsent`` such calls until
the timeout, and a burst of new ones holds threads and places in the unary queue for
about a second; none of them ever holds a worker's place.

Requests are parsed in the interceptor, not by grpcio: a malformed one is
INVALID_ARGUMENT (MALFORMED_REQUEST), logged at most once a second, never a traceback.

Health is grpcio-health-checking's servicer, non-blocking, with one fix: what runs when a
``Watch`` ends (on the serving thread) never waits for the servicer's lock, which a
starting ``Watch`` holds while its first message is sent (see ``_HealthServicer``;
tests/e2e/test_hostile_grpc.py churns watches to keep it so).

Draining (SIGTERM/SIGINT, ``App.stop``): new calls are refused, health turns
NOT_SERVING for "" and every service (open ``Watch`` streams are told, then ended, so
they do not hold the drain), and in-flight calls get ``shutdown_grace`` seconds to
finish before they are cancelled.

Reflection serves the proto comments too (``grpcurl describe`` shows them), and answers
for methods (``pkg.Service.Method``), which protobuf's own descriptor pool does not.

With ``--tls-cert-file`` the port speaks TLS only (``--tls-client-ca-file``: clients must
present a certificate signed by that CA); health and reflection are served over it too.
"""

from __future__ import annotations

import contextlib
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

from accounts_grpc.config import Settings, read_tls
from accounts_grpc.rpc import otel
from accounts_grpc.rpc.interceptor import Lanes, PipelineInterceptor
from accounts_grpc.rpc.pipeline import Pipeline

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: threads that answer refusals (OVERLOADED, TOO_MANY_STREAMS): each takes microseconds
REFUSAL_WORKERS = 2
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
    """grpcio's reference health servicer, non-blocking (a ``Watch`` holds no thread),
    plus: a ``Watch`` that ends cannot freeze the server, and every open ``Watch`` is
    ended when draining.

    A ``Watch`` stream is an in-flight RPC, so left open it would hold the drain for the
    whole grace. Watchers first receive NOT_SERVING, then their stream ends (OK); a
    client that watches again is refused, which health-checking clients read as down.
    """

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._forgetter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-watch")

    def _on_close_callback(self, send_response_callback: Any, service: str) -> Any:
        """What runs when a ``Watch`` ends, on grpcio's serving thread, so it must never
        wait. grpcio-health-checking's own takes the servicer's lock there; but ``Watch``
        and ``set`` hold that lock while they send, and a send waits for the serving
        thread: one Watch ending while another started froze the whole server (a few
        clients opening and cancelling watches did it within a second). So the watcher
        is forgotten here only if the lock is free, else on a thread of its own."""

        def forget() -> None:
            with self._lock:
                self._send_response_callbacks.get(service, set()).discard(
                    send_response_callback)

        def callback() -> None:
            if self._lock.acquire(blocking=False):
                try:
                    self._send_response_callbacks.get(service, set()).discard(
                        send_response_callback)
                finally:
                    self._lock.release()
            else:
                with contextlib.suppress(RuntimeError):  # stopped: nobody sends any more
                    self._forgetter.submit(forget)
            send_response_callback(None)

        return callback

    def close(self) -> None:
        self._forgetter.shutdown(wait=False)

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
        *,
        reuse_port: bool = False,
    ) -> None:
        """``reuse_port``: listen with SO_REUSEPORT, sharing the port with the other
        workers of ``serve --processes N`` (the kernel spreads new connections over
        them); off for a single process, so that a port in use is an error, not shared."""
        self._settings = settings
        workers = settings.max_concurrent_rpcs
        self.lanes = Lanes(
            unary_workers=workers,
            unary_limit=workers + settings.grpc_max_queued_calls,
            max_streams=settings.grpc_max_streams,
            max_streams_per_peer=settings.grpc_max_streams_per_peer,
            max_unsent=settings.grpc_max_unsent,
            max_unsent_per_peer=settings.grpc_max_unsent_per_peer,
            message_timeout=settings.grpc_message_timeout,
            refusal_workers=REFUSAL_WORKERS,
            trusted_proxies=settings.proxy_networks(),
        )
        # grpcio needs a default pool; every handler served names one of the lanes instead
        self._executor = ThreadPoolExecutor(
            max_workers=self.lanes.threads, thread_name_prefix="grpc-worker"
        )
        backstop = 2 * (self.lanes.unary_limit + settings.grpc_max_streams) + REFUSAL_WORKERS
        self.server = grpc.server(
            self._executor,
            # OpenTelemetry's, outermost, only while tracing is on (rpc/otel.py)
            interceptors=[*otel.server_interceptors(), PipelineInterceptor(pipeline, self.lanes)],
            maximum_concurrent_rpcs=backstop,
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        for add, servicer in servicers:
            add(servicer, self.server)  # type: ignore[operator]
        if extra_handlers:
            self.server.add_generic_rpc_handlers(tuple(extra_handlers))
        self.health = _HealthServicer()
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
        address = f"{host}:{settings.grpc_port}"
        tls = read_tls(settings)
        if tls is None:
            self.port = self.server.add_insecure_port(address)
        else:  # TLS only: a plaintext client fails its handshake (one mode per port)
            self.port = self.server.add_secure_port(address, grpc.ssl_server_credentials(
                [(tls.private_key, tls.cert_chain)], root_certificates=tls.client_ca,
                require_client_auth=tls.client_ca is not None))
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
        pools = self._pools()
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        self.health.close()
        self.lanes.close()
        deadline = time.monotonic() + 1.0  # idle workers leave at once
        for pool in pools:
            for t in list(getattr(pool, "_threads", ())):
                t.join(max(0.0, deadline - time.monotonic()))

    def _pools(self) -> list[ThreadPoolExecutor]:
        return [self._executor, *self.lanes.pools()]

    def busy_workers(self) -> int:
        """Worker threads still running a handler after ``stop`` (cut off at the grace)."""
        return sum(t.is_alive() for pool in self._pools()
                   for t in getattr(pool, "_threads", ()))
