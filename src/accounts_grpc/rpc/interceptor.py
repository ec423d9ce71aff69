"""The one gRPC interceptor: runs every accounts.v1 unary call through the Pipeline.

Written against grpcio's own ``grpc.ServerInterceptor`` rather than grpc-interceptor's
wrapper: it wraps each method handler once (cached), so the per-call cost is the
Pipeline alone. Other packages (reflection, health) pass through untouched; a streaming
accounts.v1 RPC (there is none) would be refused, never served unauthenticated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from accounts_grpc.rpc.pipeline import CallFailed, Pipeline
from accounts_grpc.rpc.status import grpc_code, status_for

PACKAGE_PREFIX = "/accounts.v1."


class PipelineInterceptor(grpc.ServerInterceptor):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        # method → (the handler it wraps, the wrapper); the handler is kept (not its id)
        # so that a new handler object for the method is never served a stale wrapper
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or not method.startswith(PACKAGE_PREFIX):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler.unary_unary is not None:
            wrapped = self._wrap(method, handler)
        else:
            wrapped = _refuse_stream(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary
        assert inner is not None
        pipeline = self._pipeline

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            try:
                return pipeline.call(
                    method, request, metadata, context.peer(), "grpc",
                    lambda req: inner(req, context),
                )
            except CallFailed as e:
                s = e.status
                context.abort_with_status(_RpcStatus(s))
                raise AssertionError("unreachable") from None  # abort_with_status raises

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _refuse_stream(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Fail closed: the pipeline (authentication included) serves unary calls only, so a
    streaming accounts.v1 RPC is refused rather than served unauthenticated."""
    denied = status_for(
        "PERMISSION_DENIED",
        "streaming RPCs have no access rule in this server and are denied",
        "NO_ACCESS_RULE",
    )

    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort_with_status(_RpcStatus(denied))

    kw = dict(
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    return grpc.stream_stream_rpc_method_handler(refuse, **kw)


class _RpcStatus(grpc.Status):  # type: ignore[misc]
    """grpc.Status carrying google.rpc.Status details in ``grpc-status-details-bin``."""

    def __init__(self, status: Any) -> None:
        self.code = grpc_code(status)
        self.details = status.message
        self.trailing_metadata = (("grpc-status-details-bin", status.SerializeToString()),)
