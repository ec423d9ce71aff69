"""The one gRPC interceptor: runs every accounts.v1 unary call through the Pipeline.

Written against grpcio's own ``grpc.ServerInterceptor`` rather than grpc-interceptor's
wrapper: it wraps each method handler once (cached), so the per-call cost is the
Pipeline alone. Streams and other packages (reflection, health) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from accounts_grpc.rpc.pipeline import CallFailed, Pipeline
from accounts_grpc.rpc.status import grpc_code

PACKAGE_PREFIX = "/accounts.v1."


class PipelineInterceptor(grpc.ServerInterceptor):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._wrapped: dict[tuple[str, int], grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or not method.startswith(PACKAGE_PREFIX) or handler.unary_unary is None:
            return handler
        key = (method, id(handler))
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrap(method, handler)
            self._wrapped[key] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary
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


class _RpcStatus(grpc.Status):  # type: ignore[misc]
    """grpc.Status carrying google.rpc.Status details in ``grpc-status-details-bin``."""

    def __init__(self, status: Any) -> None:
        self.code = grpc_code(status)
        self.details = status.message
        self.trailing_metadata = (("grpc-status-details-bin", status.SerializeToString()),)
