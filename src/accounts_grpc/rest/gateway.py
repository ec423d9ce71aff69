"""The REST shim: a grpc-gateway-style transcoder, as one small ASGI application.

Every route comes from a ``google.api.http`` annotation (``routes.py``); a request is
matched, transcoded to the RPC's request message (``transcode.py``: path, query,
proto3 JSON body), and handed to the very Pipeline the gRPC interceptor uses, in
process, on a worker thread (authentication, authorization, error mapping, logging and
metrics happen there, once, for both transports). The response goes back as proto3
JSON as grpc-gateway v2 writes it, every field present (``transcode.response_json``);
a failure as grpc-gateway's ``{"code", "message", "details"}`` with its HTTP
status (``errors.py``). ``POST /v1/token`` also speaks RFC 6749 (``oauth.py``).

Besides the RPC routes: ``/healthz`` (the process is up), ``/readyz`` (the database
answers and the server is not draining; 503 otherwise), ``/metrics`` (Prometheus text
format) and ``/openapi.json`` (OpenAPI 3.1, generated from the same annotations); the
OAuth metadata, introspection and revocation endpoints (``oauth_endpoints.py``). CORS for
the origins of ``--cors-allowed-origins`` (``cors.py``): preflights are answered before
any call, with each path's own methods.

Limits: a route with a body authenticates and authorizes the caller first (a stranger
gets 401/403 and its body is never read); a body larger than ``--http-max-body-bytes``
(default 1 MiB) is refused with 413 before it is read, or as soon as it grows past the
limit; one that does not arrive within ``--http-body-timeout`` gets 408.

Raw ASGI rather than Starlette routing: the hot path is a dict lookup, a message parse
and a thread hop, with nothing per request that could be done once at startup.

The gateway depends on narrow things only, named in ``GatewayConfig``: the call pipeline,
the servicers by service, a readiness check and its limits. The composition root
(``app.py``) fills it in; nothing here knows the App.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from prometheus_client import generate_latest

from accounts_grpc import tracing
from accounts_grpc.config import Settings
from accounts_grpc.domain.validate import FORBIDDEN_CHARS
from accounts_grpc.rest import oauth
from accounts_grpc.rest.asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
)
from accounts_grpc.rest.cors import CorsPolicy
from accounts_grpc.rest.errors import Headers, error_response, shim_status, status_dict
from accounts_grpc.rest.oauth_endpoints import (
    INTROSPECT_PATH,
    REVOKE_PATH,
    Networks,
    OAuthEndpoints,
)
from accounts_grpc.rest.openapi import render
from accounts_grpc.rest.routes import Match, Route, Router, routes_for
from accounts_grpc.rest.templates import unescape
from accounts_grpc.rest.transcode import (
    Problem,
    invalid,
    load_json,
    merge_json,
    message_json,
    parse_query,
    response_json,
    set_field,
    stream_chunk,
)
from accounts_grpc.rpc import metrics, registry
from accounts_grpc.rpc.pipeline import REQUEST_ID_KEY, Admission, CallFailed, request_id
from accounts_grpc.rpc.status import internal_status, status_for

log = logging.getLogger("accounts_grpc.rest")

SHUTTING_DOWN = status_for(
    "UNAVAILABLE", "the server stopped before the call finished; its outcome is unknown "
    "(a create with a request_id can be retried safely)", "SHUTTING_DOWN")


JSON_TYPE = b"application/json"
NDJSON_TYPE = b"application/x-ndjson"
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# Request headers passed on to the pipeline as gRPC metadata (lowercase, as gRPC has
# them); grpc-gateway's "Grpc-Metadata-<name>" headers pass on as "<name>".
FORWARDED = frozenset({b"authorization", b"x-request-id", b"user-agent"})
GRPC_METADATA = b"grpc-metadata-"
READY_TIMEOUT = 2.0
JWKS_RPC = "/accounts.v1.SessionService/GetJwks"


class CallPipeline(Protocol):
    """What the gateway asks of ``rpc.pipeline.Pipeline`` (the one the gRPC side uses)."""

    def admit(self, method: str, metadata: Mapping[str, str], peer: str,
              transport: str) -> Admission: ...

    def call(self, method: str, request: Any, metadata: Mapping[str, str], peer: str,
             transport: str, handler: Callable[[Any], Any], *,
             admitted: Admission | None = None,
             build: Callable[[], Any] | None = None) -> Any: ...

    def stream(self, method: str, request: Any, metadata: Mapping[str, str], peer: str,
               transport: str, handler: Callable[[Any], Any], *,
               build: Callable[[], Any] | None = None) -> Iterator[Any]: ...


@dataclass(frozen=True)
class Readiness:
    """What ``/readyz`` asks, each time it is asked: both are read at call time."""

    #: the server is draining (cheap: asked on the event loop)
    draining: Callable[[], bool]
    #: the database answers (blocking: run on a worker thread, given READY_TIMEOUT)
    database_answers: Callable[[], bool]


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway depends on; ``from_settings`` reads the limits."""

    pipeline: CallPipeline
    #: service full name (``accounts.v1.AccountService``) → its servicer; the RPCs of a
    #: service without one, and methods a servicer leaves unimplemented, answer 501
    servicers: Mapping[str, object]
    readiness: Readiness
    max_body_bytes: int
    body_timeout: float
    #: the threads calls run on, and how many more calls may wait for one
    workers: int
    max_queued: int
    jwks_max_age: int
    #: ``--trusted-proxies``: whose X-Forwarded-Host/-Proto the OAuth metadata believes
    trusted_proxies: Networks = ()
    #: ``--cors-*``: the origins whose pages may call the shim (None: no CORS headers)
    cors: CorsPolicy | None = None
    #: server streams (WatchEvents) open at once, each stepped on a thread of its own
    max_streams: int = 32

    @classmethod
    def from_settings(cls, settings: Settings, *, pipeline: CallPipeline,
                      servicers: Mapping[str, object], readiness: Readiness) -> GatewayConfig:
        return cls(
            pipeline=pipeline,
            servicers=servicers,
            readiness=readiness,
            max_body_bytes=settings.http_max_body_bytes,
            body_timeout=settings.http_body_timeout,
            workers=settings.rest_workers(),
            max_queued=settings.grpc_max_queued_calls,
            jwks_max_age=settings.jwks_max_age,
            trusted_proxies=settings.proxy_networks(),
            cors=CorsPolicy.from_settings(settings),
            max_streams=settings.grpc_max_streams,
        )


def _unimplemented(rpc: str) -> CallFailed:
    return CallFailed(shim_status("UNIMPLEMENTED", f"{rpc} is not implemented yet",
                                  "UNIMPLEMENTED", {"method": rpc}))


def _handler_for(servicer: Any, name: str, rpc: str) -> Callable[[Any], Any]:
    """``request -> response`` calling the servicer method (context is never used).

    A method still inherited from the generated base class answers UNIMPLEMENTED, as
    grpcio does, rather than crashing on the missing context.
    """
    fn = getattr(servicer, name, None)
    impl = getattr(type(servicer), name, None)
    if fn is None or getattr(impl, "__module__", "").endswith("_pb2_grpc"):
        def missing(_request: Any) -> Any:
            raise _unimplemented(rpc)
        return missing

    def call(request: Any) -> Any:
        try:
            return fn(request, None)
        except NotImplementedError:
            raise _unimplemented(rpc) from None

    return call


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _raw_path(scope: Scope) -> str:
    """The request's path as sent (still percent-encoded), without a query."""
    raw = scope.get("raw_path")
    raw_path = raw.decode("latin-1") if raw else str(scope["path"])
    return raw_path.split("?", 1)[0]  # some servers leave the query on raw_path


# where __call__ keeps the request's id for _headers (an ASGI scope may carry extra keys),
# and, for the metrics, the route matched (its template or fixed path, and its RPC) and
# the response's status
REQUEST_ID_SCOPE = "accounts.request_id"
ROUTE_SCOPE = "accounts.route"
STATUS_SCOPE = "accounts.status"


def _matched(scope: Scope, route: str, rpc: str) -> None:
    """The route a request matched, for its metrics and (tracing) its span's name, which
    must be set before the answer: the middleware ends the span with the last byte."""
    scope[ROUTE_SCOPE] = (route, rpc)
    if tracing.enabled():
        tracing.name_http_span(scope["method"], route, rpc)


def _echo_request_id(scope: Scope, send: Send) -> Send:
    """``send`` adding ``x-request-id`` to the response, whatever answers it: the request's
    X-Request-Id if well formed, else a new id (``domain.call.request_id``), which the
    pipeline gets too (``_headers``), so the call's log line names the id echoed."""
    given = None
    for k, v in scope["headers"]:
        if k == b"x-request-id":
            given = v.decode("latin-1")
            break
    rid = scope[REQUEST_ID_SCOPE] = request_id(given)
    header = (b"x-request-id", rid.encode())

    async def echo(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
            scope[STATUS_SCOPE] = message["status"]
        await send(message)

    return echo


def _header_text(value: bytes) -> str:
    """A header value as text for the pipeline: control characters (obs-text can carry
    C1 controls) become U+FFFD, so a user agent is stored as safely as any field."""
    text = value.decode("latin-1")
    return FORBIDDEN_CHARS.sub("\ufffd", text) if FORBIDDEN_CHARS.search(text) else text


async def _send(send: Send, status: int, headers: Headers, body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    """The ASGI application ``create_http_app`` returns."""

    def __init__(self, config: GatewayConfig) -> None:
        self.pipeline = config.pipeline
        self.readiness = config.readiness
        self.max_body = config.max_body_bytes
        self.body_timeout = config.body_timeout
        self.jwks_max_age = config.jwks_max_age
        self.cors = config.cors
        routes = routes_for(registry.service_descriptors())
        for r in routes:
            servicer = config.servicers.get(r.service.full_name)
            r.handler = _handler_for(servicer if servicer is not None else object(),
                                     r.method.name, r.rpc)
        self.router = Router(routes)
        self.executor = ThreadPoolExecutor(max_workers=config.workers,
                                           thread_name_prefix="rest-worker")
        # admission, as on the gRPC port: calls past the workers queue, up to a bound; past
        # it a request is refused at once on the event loop (503, Retry-After), never queued
        # without limit (counted on the loop's thread only, so no lock is needed)
        self.max_in_flight = config.workers + config.max_queued
        self.in_flight = 0
        # server streams step on threads of their own, so that open streams never hold
        # the workers unary calls need; past the bound a new one is refused at once
        self.max_streams = config.max_streams
        self.open_streams = 0
        self.stream_executor = ThreadPoolExecutor(max_workers=config.max_streams,
                                                  thread_name_prefix="rest-stream")
        self._openapi: bytes | None = None
        self._openapi_lock = threading.Lock()
        self._static: dict[str, Callable[[Scope, Receive, Send], Awaitable[int]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/openapi.json": self._openapi_json,
        }
        self._static.update(OAuthEndpoints(
            pipeline=self.pipeline, servicers=config.servicers,
            trusted_proxies=config.trusted_proxies, jwks_max_age=config.jwks_max_age,
            max_body=config.max_body_bytes, body_timeout=config.body_timeout,
            in_worker=self._in_worker, headers=self._headers, send=_send,
        ).routes())

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.stream_executor.shutdown(wait=False, cancel_futures=True)

    # -- ASGI entry ---------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        # every request measured once, here, by the route it matched (rpc/metrics.py)
        start = time.perf_counter()
        metrics.http_started()
        try:
            await self._http(scope, receive, send)
        finally:
            route, rpc = scope.get(ROUTE_SCOPE, ("", ""))
            metrics.http_ended(scope["method"], route, rpc, scope.get(STATUS_SCOPE, 0),
                               time.perf_counter() - start)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = _echo_request_id(scope, send)  # every response names the request's id
        if self.cors is not None:  # a preflight is answered before any call (rest/cors.py)
            preflight = self.cors.preflight(scope, lambda: self._methods(scope))
            if preflight is not None:
                await _send(send, 204, preflight, b"")
                return
            send = self.cors.wrap(scope, send)
        path: str = scope["path"]
        static = self._static.get(path)
        if static is not None:
            _matched(scope, path, "")
            await static(scope, receive, send)
            return
        raw_path = _raw_path(scope)
        method: str = scope["method"]
        match = self.router.match(method, raw_path)
        if match is None:
            await self._no_route(method, raw_path, send)
            return
        _matched(scope, match.route.template.source, match.route.rpc)
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if match.route.rpc == oauth.TOKEN_RPC:
                await self._token(match, scope, receive, tracked)
            elif match.route.method.server_streaming:
                await self._stream(match, scope, receive, tracked)
            else:
                await self._rpc(match, scope, receive, tracked)
        except asyncio.CancelledError:
            # The server stopped and this call outlived the grace: the caller is told
            # UNAVAILABLE (503, retry elsewhere) rather than uvicorn's bare 500. As with a
            # gRPC call cut at shutdown, its outcome is unknown: a write may still commit.
            log.warning("%s %s was cut: still running at the end of the shutdown grace",
                        method, raw_path)
            if not started:
                await _send(send, *error_response(SHUTTING_DOWN))
        except Exception:
            # A bug in the shim itself (the pipeline already maps everything it runs):
            # log it, and answer like any INTERNAL error, with nothing of it on the wire.
            log.exception("REST shim failed on %s %s", method, raw_path)
            if not started:
                await _send(send, *error_response(internal_status()))

    def _methods(self, scope: Scope) -> list[str]:
        """The methods ``scope``'s path is served with, as a 405's ``Allow`` names them."""
        if scope["path"] in self._static:
            return ["POST"] if scope["path"] in (INTROSPECT_PATH, REVOKE_PATH) else ["GET", "HEAD"]
        return self.router.allowed(_raw_path(scope))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the transcoded RPCs --------------------------------------------------------------
    @staticmethod
    def _headers(scope: Scope) -> tuple[dict[str, str], str, int | None]:
        """(metadata for the pipeline, content type, declared content length)."""
        md: dict[str, str] = {}
        ctype = ""
        length: int | None = None
        for k, v in scope["headers"]:
            if k in FORWARDED:
                md[k.decode()] = _header_text(v)
            elif k == b"x-forwarded-for":  # a list header: repeated ones join (RFC 9110)
                hops = v.decode("latin-1")
                md["x-forwarded-for"] = (f"{md['x-forwarded-for']}, {hops}"
                                         if "x-forwarded-for" in md else hops)
            elif k == b"content-type":
                ctype = v.decode("latin-1")
            elif k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
            elif k.startswith(GRPC_METADATA) and k != GRPC_METADATA + b"x-forwarded-for":
                md[k[len(GRPC_METADATA):].decode("latin-1")] = _header_text(v)
        if REQUEST_ID_SCOPE in scope:  # the id echoed (see _echo_request_id)
            md[REQUEST_ID_KEY] = scope[REQUEST_ID_SCOPE]
        return md, ctype, length

    def _build(self, route: Route, values: list[str], body: bytes | None,
               query: bytes) -> Any:
        """The request message: body first, then the path (which wins), then the query."""
        msg = route.request_class()
        if body is not None and route.body and body.strip():
            merge_json(msg, load_json(body), route.body)
        if values:
            problems: list[Problem] = []
            for chain, raw, name in zip(route.path_chains, values, route.path_fields,
                                        strict=True):
                try:
                    set_field(msg, chain, [unescape(raw)], name)
                except Problem as p:
                    problems.append(p)
            if problems:
                raise invalid(problems, reason="INVALID_PATH_PARAMETER", what="bad path parameter")
        if query:
            try:
                params = parse_query(query)
            except UnicodeDecodeError:
                raise invalid([Problem("query", "is not valid percent-encoded UTF-8")],
                              reason="INVALID_QUERY_PARAMETER",
                              what="bad query string") from None
            route.query.bind(msg, params)
        return msg

    async def _in_worker(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on a worker thread; raises CallFailed (OVERLOADED past
        the admission bound)."""
        if self.in_flight >= self.max_in_flight:
            raise CallFailed(shim_status(
                "RESOURCE_EXHAUSTED", "the server is overloaded; retry later", "OVERLOADED",
                {"scope": "server"},
                [error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))]))
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(
                self.executor, tracing.carry(functools.partial(fn, *args, **kwargs)))
        except RuntimeError:  # the executor is shut down: the server is stopping
            raise CallFailed(shim_status("UNAVAILABLE", "the server is shutting down",
                                         "SHUTTING_DOWN")) from None
        self.in_flight += 1
        try:
            return await future
        finally:
            self.in_flight -= 1

    async def _call(self, route: Route, request: Any, metadata: dict[str, str],
                    scope: Scope, admitted: Admission | None = None,
                    build: Callable[[], Any] | None = None) -> Any:
        """Run the call through the pipeline on a worker thread; raises CallFailed."""
        return await self._in_worker(self.pipeline.call, route.rpc, request, metadata,
                                     _peer(scope), "rest", route.handler, admitted=admitted,
                                     build=build)

    async def _rpc(self, match: Match, scope: Scope, receive: Receive, send: Send) -> None:
        route = match.route
        metadata, _ctype, length = self._headers(scope)
        body: bytes | None = None
        admitted: Admission | None = None
        if route.body:
            # authentication and authorization first: a stranger's body is never read
            try:
                admitted = await self._in_worker(self.pipeline.admit, route.rpc, metadata,
                                                 _peer(scope), "rest")
            except CallFailed as e:
                await _send(send, *error_response(e.status))
                return
            try:
                body = await asyncio.wait_for(read_body(receive, self.max_body, length),
                                              self.body_timeout)
            except BodyTooLarge:
                await self._too_large(send)
                return
            except TimeoutError:
                await self._body_timeout(send)
                return
            except ClientGone:
                return
        query = scope.get("query_string", b"")

        def build() -> Any:  # in the pipeline, once the caller is admitted
            return self._build(route, match.values, body, query)

        try:
            response = await self._call(route, None, metadata, scope, admitted, build)
        except CallFailed as e:
            await _send(send, *error_response(e.status))
            return
        # as grpc-gateway prints it: every field, at its default if need be (transcode.py)
        payload = response_json(response, route.response_body)
        out = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers: Headers = [(b"content-type", JSON_TYPE)]
        if route.rpc == JWKS_RPC:  # verifiers may cache it this long (see auth/keys.py)
            headers.append((b"cache-control", f"public, max-age={self.jwks_max_age}".encode()))
        await _send(send, 200, headers, out)

    async def _stream(self, match: Match, scope: Scope, receive: Receive, send: Send) -> None:
        """A server stream, as grpc-gateway forwards one (``ForwardResponseStream``):
        ``application/x-ndjson``, a line ``{"result": ...}`` per message, and a last
        ``{"error": ...}`` line if it fails once open. A failure before it opens (a bad
        request, authentication, a bad cursor) is an error like any call's (its HTTP
        status, a google.rpc.Status body), as grpc-gateway's ``HTTPError`` answers a
        stream that fails before its headers. Each step of the stream (a message, or a
        heartbeat at least every second) runs on the stream threads, never the
        workers; a client that goes away ends it."""
        route = match.route
        if self.open_streams >= self.max_streams:
            await _send(send, *error_response(shim_status(
                "RESOURCE_EXHAUSTED", f"the server has too many streams open (the limit is "
                f"{self.max_streams}); retry in 1 s", "TOO_MANY_STREAMS",
                {"limit": str(self.max_streams), "scope": "server"},
                [error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))])))
            return
        metadata, _ctype, _length = self._headers(scope)
        query = scope.get("query_string", b"")
        loop = asyncio.get_running_loop()
        try:
            deadline = _deadline(scope)
        except CallFailed as e:
            await _send(send, *error_response(e.status))
            return
        self.open_streams += 1
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            try:
                messages = await loop.run_in_executor(self.stream_executor, tracing.carry(
                    functools.partial(self.pipeline.stream, route.rpc, None, metadata,
                                      _peer(scope), "rest", route.handler,
                                      build=lambda: self._build(route, match.values, None,
                                                                query))))
            except CallFailed as e:  # before the stream opens: a plain error
                await _send(send, *error_response(e.status))
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", NDJSON_TYPE)]})
            try:
                await self._forward(messages, gone, send, deadline)
            finally:
                await loop.run_in_executor(self.stream_executor, messages.close)  # type: ignore[attr-defined]
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
            self.open_streams -= 1

    async def _forward(self, messages: Any, gone: asyncio.Future[None], send: Send,
                       deadline: float | None) -> None:
        """Send the stream's messages until it ends, fails, passes its deadline, or its
        client goes away."""
        loop = asyncio.get_running_loop()
        while True:
            step: asyncio.Future[Any] = loop.run_in_executor(self.stream_executor, next,
                                                             messages, _ENDED)
            await asyncio.wait([step, gone], return_when=asyncio.FIRST_COMPLETED)
            try:
                message = await step  # a step under way is let finish: then it can close
            except CallFailed as e:
                if not gone.done():
                    await send({"type": "http.response.body", "more_body": True,
                                "body": stream_chunk("error", status_dict(e.status))})
                return
            if message is _ENDED or gone.done():
                return
            if deadline is not None and time.monotonic() >= deadline:
                await send({"type": "http.response.body", "more_body": True,
                            "body": stream_chunk("error", status_dict(DEADLINE_PASSED))})
                return
            if message is not None:  # None: a heartbeat
                await send({"type": "http.response.body", "more_body": True,
                            "body": stream_chunk("result", message_json(message))})

    async def _too_large(self, send: Send) -> None:
        status = shim_status(
            "RESOURCE_EXHAUSTED",
            f"the request body is larger than the limit of {self.max_body} bytes",
            "REQUEST_TOO_LARGE", {"limit_bytes": str(self.max_body)},
        )
        await _send(send, *error_response(status, 413))

    async def _body_timeout(self, send: Send) -> None:
        status = shim_status(
            "DEADLINE_EXCEEDED",
            f"the request body did not arrive within {self.body_timeout:g} s",
            "REQUEST_BODY_TIMEOUT", {"timeout_seconds": f"{self.body_timeout:g}"},
        )
        code, headers, body = error_response(status, 408)
        headers.append((b"connection", b"close"))
        await _send(send, code, headers, body)

    async def _no_route(self, method: str, raw_path: str, send: Send) -> None:
        allowed = self.router.allowed(raw_path)
        if allowed:
            status = shim_status("UNIMPLEMENTED", "Method Not Allowed", "METHOD_NOT_ALLOWED",
                                 {"method": method, "allow": ", ".join(allowed)})
            code, headers, body = error_response(status, 405)
            headers.append((b"allow", ", ".join(allowed).encode()))
        else:
            status = shim_status("NOT_FOUND", "Not Found", "ROUTE_NOT_FOUND",
                                 {"method": method})
            code, headers, body = error_response(status, 404)
        await _send(send, code, headers, body)

    # -- POST /v1/token -------------------------------------------------------------------
    async def _token(self, match: Match, scope: Scope, receive: Receive, send: Send) -> None:
        route = match.route
        metadata, ctype, length = self._headers(scope)
        authorization = metadata.pop("authorization", None)  # credentials, not a bearer token
        try:
            body = await read_body(receive, self.max_body, length)
        except BodyTooLarge:
            err = oauth.OAuthError(413, "invalid_request",
                                   f"the request body is larger than {self.max_body} bytes")
            await _send(send, *err.response())
            return
        except ClientGone:
            return
        try:
            request, basic = oauth.build_request(body, ctype, authorization)
            if scope.get("query_string"):
                raise oauth.OAuthError(400, "invalid_request",
                                       "send the parameters in the body, not the query string")
        except oauth.OAuthError as e:
            await _send(send, *e.response())
            return
        # a token-exchange grant runs as ExchangeToken (RFC 8693, rest/oauth.py)
        route = next((r for r in self.router.routes if r.rpc == oauth.rpc_for(request)), route)
        try:
            response = await self._call(route, request, metadata, scope)
        except CallFailed as e:
            await _send(send, *oauth.error_from_status(e.status, basic).response())
            return
        # RFC 6749 section 5.1, not protojson: members at their default are left out
        out = json.dumps(response_json(response), separators=(",", ":")).encode()
        await _send(send, 200, [(b"content-type", JSON_TYPE), *oauth.NO_STORE], out)

    # -- operations endpoints -------------------------------------------------------------
    async def _only_get(self, scope: Scope, send: Send) -> bool:
        if scope["method"] in ("GET", "HEAD"):
            return True
        status = shim_status("UNIMPLEMENTED", "Method Not Allowed", "METHOD_NOT_ALLOWED",
                             {"method": scope["method"], "allow": "GET, HEAD"})
        code, headers, body = error_response(status, 405)
        headers.append((b"allow", b"GET, HEAD"))
        await _send(send, code, headers, body)
        return False

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> int:
        if not await self._only_get(scope, send):
            return 405
        await _send(send, 200, [(b"content-type", b"text/plain; charset=utf-8")], b"ok\n")
        return 200

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> int:
        if not await self._only_get(scope, send):
            return 405
        reason = ""
        if self.readiness.draining():
            reason = "draining"
        else:
            loop = asyncio.get_running_loop()
            try:
                ok = await asyncio.wait_for(
                    loop.run_in_executor(self.executor, self.readiness.database_answers),
                    READY_TIMEOUT)
            except (TimeoutError, RuntimeError):
                ok = False
            if not ok:
                reason = "database unreachable"
        status = 503 if reason else 200
        doc = {"ready": False, "reason": reason} if reason else {"ready": True}
        await _send(send, status, [(b"content-type", JSON_TYPE)], json.dumps(doc).encode())
        return status

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> int:
        if not await self._only_get(scope, send):
            return 405
        body = generate_latest(metrics.scrape_registry())  # every worker's, under a supervisor
        await _send(send, 200, [(b"content-type", METRICS_TYPE)], body)
        return 200

    async def _openapi_json(self, scope: Scope, receive: Receive, send: Send) -> int:
        if not await self._only_get(scope, send):
            return 405
        doc = self._openapi
        if doc is None:
            loop = asyncio.get_running_loop()
            doc = await loop.run_in_executor(self.executor, self._render_openapi)
        await _send(send, 200, [(b"content-type", JSON_TYPE)], doc)
        return 200

    def _render_openapi(self) -> bytes:
        with self._openapi_lock:
            if self._openapi is None:
                self._openapi = render(self.router.routes).encode()
            return self._openapi


_ENDED = object()
DEADLINE_PASSED = status_for("DEADLINE_EXCEEDED", "the stream reached its Grpc-Timeout",
                             "DEADLINE_EXCEEDED")
#: grpc-timeout's units (the gRPC over HTTP/2 spec), in seconds
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def _deadline(scope: Scope) -> float | None:
    """When a stream must end (``time.monotonic``), from a ``Grpc-Timeout`` header as
    grpc-gateway takes it (``1S``, ``500m``: up to 8 digits and a unit); None without
    one. A malformed one is INVALID_ARGUMENT."""
    for k, v in scope["headers"]:
        if k == b"grpc-timeout":
            text = v.decode("latin-1")
            if not (2 <= len(text) <= 9 and text[:-1].isdigit()
                    and text[-1] in _TIMEOUT_UNITS):
                raise CallFailed(shim_status(
                    "INVALID_ARGUMENT", f"Grpc-Timeout {text[:20]!r} is not a timeout such "
                    "as 1S or 500m", "INVALID_TIMEOUT"))
            return time.monotonic() + int(text[:-1]) * _TIMEOUT_UNITS[text[-1]]
    return None


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (a GET sends no body to wait for)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_http_app(config: GatewayConfig) -> Gateway:
    """The ASGI application serving the REST shim (uvicorn runs it)."""
    return Gateway(config)

