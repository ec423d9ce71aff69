"""OpenTelemetry tracing when an OTLP endpoint is configured, and nothing at all otherwise.

Where spans go: ``--otlp-endpoint`` (``ACCOUNTS_OTLP_ENDPOINT``), an OTLP/HTTP collector's
base URL (spans are posted to its ``/v1/traces``); when that is empty, OpenTelemetry's own
variables, read as every OpenTelemetry SDK reads them: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(the whole URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL). With none of them, or with
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``, tracing is off. Everything
else is the SDK's standard variables: ``OTEL_SERVICE_NAME`` (here ``accounts-grpc`` by
default), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``_ARG`` (default
``parentbased_always_on``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``_TIMEOUT``, ``_COMPRESSION``,
``_CERTIFICATE``, ``OTEL_BSP_*`` (batching) and ``OTEL_PROPAGATORS`` (default: W3C
``traceparent``/``tracestate`` and baggage).

Off, nothing of OpenTelemetry is imported or installed (no interceptor, middleware or
engine listener), and the few places that would add a span test ``enabled()`` first.

On, the spans come from OpenTelemetry's maintained instrumentations: the gRPC server
interceptor (``rpc/otel.py``), the ASGI middleware around the REST shim (``asgi``), and the
SQLAlchemy instrumentation on the engine (``store/db.py``): a call that carries a W3C
``traceparent`` (gRPC metadata, an HTTP header) gets spans that are its children, its
statements' spans theirs. The point reads that run on SQLite's own cursor, out of
SQLAlchemy's sight (``store/rows.py``'s ``FastSelect``), get theirs from ``db_span``.

One provider per serving process: ``setup`` runs as the process's App is built, so under
``serve --processes N`` in every worker after it started (a fresh interpreter, never a
fork of a traced process: a BatchSpanProcessor's exporting thread would not survive one);
the supervisor traces nothing. ``flush`` exports what is left as the App stops (a
worker leaves with ``os._exit``, which runs no exit handler).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar

log = logging.getLogger("accounts_grpc")

#: ``service.name`` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one
SERVICE_NAME = "accounts-grpc"
#: the spans of the ASGI middleware for each message sent and received: noise here
_ASGI_EXCLUDED: list[Literal["receive", "send"]] = ["receive", "send"]

_provider: Any = None  # the SDK's TracerProvider while tracing is on
_status = "tracing not set up"

_T = TypeVar("_T")


def destination(endpoint: str, env: Mapping[str, str]) -> str | None:
    """The URL spans are posted to, or None: tracing off (see the module's docstring)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if endpoint:
        return endpoint.rstrip("/") + "/v1/traces"
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else None


def setup(endpoint: str = "") -> bool:
    """Trace this process if an endpoint is configured (once; later calls keep it);
    True if tracing is on. ``status()`` says which, for the log line the app writes once
    it serves (not here: a start that fails must print its one error line alone)."""
    global _provider, _status
    if _provider is not None:
        return True
    target = destination(endpoint, os.environ)
    if target is None:
        _status = ("tracing off (no --otlp-endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or "
                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)")
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_KEY
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, and which process (worker) it is
    resource = Resource.create({"process.pid": os.getpid()})
    if str(resource.attributes.get(SERVICE_KEY, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_KEY: SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target)))
    trace.set_tracer_provider(provider)  # for any other library that traces
    _provider = provider
    _status = (f"tracing on: spans to {target} (OTLP/HTTP), service.name "
               f"{resource.attributes.get(SERVICE_KEY)}")
    return True


def status() -> str:
    """What ``setup`` decided, as one line for the log."""
    return _status


def enabled() -> bool:
    return _provider is not None


def tracer_provider() -> Any:
    """The provider the instrumentations are given (None: tracing off)."""
    return _provider


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans still batched (as the App stops)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def carry(fn: Callable[[], _T]) -> Callable[[], _T]:
    """``fn`` to run on another thread inside the current context (its current span),
    which ``loop.run_in_executor`` does not carry over; ``fn`` itself when off."""
    if _provider is None:
        return fn
    return functools.partial(contextvars.copy_context().run, fn)


def asgi(app: Any) -> Any:
    """``app`` inside OpenTelemetry's ASGI middleware (a server span per HTTP request, the
    caller's ``traceparent`` its parent); ``app`` itself when off."""
    if _provider is None:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, tracer_provider=_provider, exclude_spans=_ASGI_EXCLUDED)


def name_http_span(method: str, route: str, rpc: str) -> None:
    """Name the current HTTP server span by its route once the REST shim matched one
    (the middleware names it by the raw path, ids and all): ``GET /v1/me``, with
    ``http.route``, and the RPC it maps to as ``rpc.service``/``rpc.method``."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not route or not span.is_recording():
        return
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    if rpc:
        service, _, name = rpc.lstrip("/").partition("/")
        span.set_attributes({"rpc.system": "grpc", "rpc.service": service,
                             "rpc.method": name})


@contextlib.contextmanager
def db_span(statement: str, system: str, database: str | None) -> Iterator[None]:
    """A client span for a statement run outside SQLAlchemy, named and attributed as the
    SQLAlchemy instrumentation names its own (``SELECT accounts.db``)."""
    tracer = _provider.get_tracer("accounts_grpc.store")
    words = statement.split(None, 1)
    name = " ".join(p for p in (words[0] if words else "", database or "") if p) or system
    attributes = {"db.system": system, "db.statement": statement}
    if database:
        attributes["db.name"] = database
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
        yield
