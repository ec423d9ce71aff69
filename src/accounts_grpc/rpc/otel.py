"""gRPC server spans: OpenTelemetry's server interceptor (opentelemetry-instrumentation-grpc),
installed only while tracing is on (``accounts_grpc.tracing``), with three fixes for how
this server runs its handlers (server.py, interceptor.py):

- **Thread pools.** grpcio runs a handler on the pool its behavior names
  (``experimental_thread_pool``); the instrumentation wraps every behavior in a function
  of its own that names none, which would move every call to the server's default pool
  and past the lanes' limits. The wrapper gets the wrapped behavior's pool.
- **Non-blocking handlers** (health ``Watch``) are served untraced: the instrumentation
  calls a behavior with (request, context), a non-blocking one takes a send callback too.
- **The status.** A failed call ends with ``abort_with_status`` (interceptor.py), which
  the instrumentation's context passes on without recording it, so every span would say
  OK. The code is read back from the context and set on the span: ``rpc.grpc.status_code``,
  and an ERROR status for the codes that are the server's fault, as the instrumentation
  does itself for ``abort``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from accounts_grpc import tracing

#: the codes whose spans are errors (OpenTelemetry's semantic conventions for gRPC servers)
SERVER_FAULTS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
})


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """The tracing interceptor, to run first (outermost), or none while tracing is off."""
    provider = tracing.tracer_provider()
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [_Spans(server_interceptor(tracer_provider=provider))]


def _behavior(handler: grpc.RpcMethodHandler) -> Any:
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary
            or handler.stream_stream)


def _record_status(context: grpc.ServicerContext) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    code = context.code()  # type: ignore[attr-defined]
    if code is None or code == grpc.StatusCode.OK:
        return
    span = trace.get_current_span()  # the server span: the behavior runs inside it
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULTS:
        details = context.details()  # type: ignore[attr-defined]
        if isinstance(details, bytes):
            details = details.decode("utf-8", "replace")
        span.set_status(Status(StatusCode.ERROR, f"{code}:{details}"))


def _recording(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
    """``handler`` whose behavior records an aborted call's code on the current span;
    None for a non-blocking handler (left untraced)."""
    behavior = _behavior(handler)
    if getattr(behavior, "experimental_non_blocking", False):
        return None

    def recorded(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception:
            _record_status(context)
            raise

    make: Callable[..., grpc.RpcMethodHandler] = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(recorded, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class _Spans(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, otel: grpc.ServerInterceptor) -> None:
        self._otel = otel
        # handler (by id, kept so that a new object is never served a stale entry) →
        # its recording twin; the handlers come from the PipelineInterceptor's own cache,
        # so there are a few per method (served, refusal). grpcio's serving thread only.
        self._recording: dict[int, tuple[grpc.RpcMethodHandler,
                                         grpc.RpcMethodHandler | None]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        entry = self._recording.get(id(handler))
        if entry is None or entry[0] is not handler:
            entry = (handler, _recording(handler))
            self._recording[id(handler)] = entry
        recording = entry[1]
        if recording is None:
            return handler
        traced = self._otel.intercept_service(lambda _details: recording, handler_call_details)
        pool = getattr(_behavior(handler), "experimental_thread_pool", None)
        if traced is not None and pool is not None:
            _behavior(traced).experimental_thread_pool = pool
        return traced
