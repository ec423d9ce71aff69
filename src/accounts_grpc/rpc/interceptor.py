"""The one gRPC interceptor: admission, parsing and (for accounts.v1) the Pipeline, for
every call of every service served (accounts.v1, health, reflection).

Written against grpcio's own ``grpc.ServerInterceptor`` rather than grpc-interceptor's
wrapper: it wraps each method handler once (cached per method), so the per-call cost on
grpcio's serving thread is a dict look-up and one comparison, and in the worker the
Pipeline alone plus the message's ``FromString``.

What a wrapped handler changes:

- **Admission.** A unary handler runs on the unary pool, a streaming one on the stream
  pool (``experimental_thread_pool``, see server.py); ``intercept_service`` reads how many
  calls the pool holds and, past its bound, returns a refusal instead: RESOURCE_EXHAUSTED
  with ErrorInfo OVERLOADED (unary) or TOO_MANY_STREAMS (streams, also per client
  address, checked as the stream starts), and RetryInfo. A refusal runs on a small pool of
  its own and is declared stream-stream, so it never waits for a thread held by admitted
  calls, nor for the client's request message.
- **Parsing.** grpcio gets ``request_deserializer=None`` (raw bytes) and the wrapper
  parses: bytes that are not the request message (garbage, invalid UTF-8 in a string,
  nesting deeper than protobuf's limit of 100, another message type that does not parse)
  are INVALID_ARGUMENT with ErrorInfo MALFORMED_REQUEST and at most one short log line a
  second, where grpcio would answer INTERNAL and log a traceback for each. In a request
  stream, a bad message ends the stream the same way.
- **The Pipeline** (authentication, authorization, errors, the call's log line) for
  accounts.v1 unary calls; a streaming accounts.v1 RPC (there is none) is refused, never
  served unauthenticated. Health and reflection are served as they are.
- **The request id.** Every unary call, failed or refused as well as served, answers
  ``x-request-id`` in its trailing metadata: the caller's own ``x-request-id`` when it is
  well formed, a new one otherwise (``domain.call.request_id``: a malformed value is
  replaced, never refused). For accounts.v1 the Pipeline gets it in the metadata, so the
  call's log line names the very id the client was sent. Trailing, not initial: grpcio
  sends a unary call's initial metadata, response and status in one batch, and
  ``send_initial_metadata`` would split off a batch of its own, which cost about 140 µs a
  call (GetMe, 2 cores: 0.78 ms against 0.64 ms); a unary client reads both at the same
  moment anyway.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn, ParamSpec, TypeVar

import grpc
from google.protobuf import descriptor_pool, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

from accounts_grpc.rpc import metrics
from accounts_grpc.rpc.pipeline import (
    REQUEST_ID_KEY,
    CallFailed,
    Networks,
    Pipeline,
    client_address,
    peer_address,
    request_id,
)
from accounts_grpc.rpc.status import grpc_code, status_for

PACKAGE_PREFIX = "/accounts.v1."
RETRY_AFTER_SECONDS = 1

#: What protobuf raises for bytes that are not a valid message. upb (the implementation
#: in use) raises DecodeError for all of it: garbage and truncation ("Wire format was
#: corrupt"), invalid UTF-8 in a string field ("String field had bad UTF-8"), nesting
#: deeper than 100 ("Exceeded upb_DecodeOptions_MaxDepth"; unknown groups nested too deep
#: read as corrupt). The pure-Python implementation raises UnicodeDecodeError for bad
#: UTF-8 (and DecodeError for the rest), so that is caught too. Nothing else is: any
#: other exception is a bug, and stays loud.
MALFORMED = (DecodeError, UnicodeDecodeError)

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ThrottledLog:
    """At most one line per ``interval`` seconds; the next line written says how many were
    left out. What a client can cause at will (bad bytes, calls past a limit) is logged
    through one, so that a flood of them cannot flood the log."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self._log = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._skipped = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._skipped += 1
                return
            self._next = now + self._interval
            skipped, self._skipped = self._skipped, 0
        if skipped:
            self._log.warning(msg + " (and %d more not logged)", *args, skipped)
        else:
            self._log.warning(msg, *args)


# -- pools that count what they hold ------------------------------------------------------------


class CountingPool(ThreadPoolExecutor):
    """A worker pool that knows how many calls it holds: submitted and not yet ended,
    queued or running. grpcio submits each call, on its one serving thread, right after
    ``intercept_service`` admitted it, so the count read there includes every call
    admitted before; a call never submitted (grpcio's own limit refused it) is not
    counted, and one cancelled while queued is uncounted by its future."""

    def __init__(self, workers: int, name: str) -> None:
        super().__init__(max_workers=workers, thread_name_prefix=name)
        self.held = 0
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        with self._count_lock:
            self.held += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._ended(None)
            raise
        future.add_done_callback(self._ended)
        return future

    def _ended(self, _future: object) -> None:
        with self._count_lock:
            self.held -= 1


class _Slot:
    """One open stream's place in the StreamPool's counts."""

    __slots__ = ("ended", "handed_off", "peer")

    def __init__(self) -> None:
        self.peer: str | None = None
        self.handed_off = False
        self.ended = False


class StreamPool(ThreadPoolExecutor):
    """Worker threads for long-lived streams, one per stream, and the count of open
    streams, in all (``held``, read by ``intercept_service``) and per client address.

    A stream is counted from its submission until it ends: for a blocking handler
    (reflection) that is when its worker returns; a non-blocking one (health ``Watch``)
    returns at once and stays open without a thread, so its place is handed to the RPC's
    termination callback."""

    def __init__(self, cap: int, per_peer: int, name: str) -> None:
        super().__init__(max_workers=cap, thread_name_prefix=name)
        self.cap = cap
        self.per_peer = per_peer
        self.held = 0
        self._by_peer: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        slot = _Slot()
        with self._lock:
            self.held += 1
        try:
            future: Future[_T] = super().submit(
                self._run, slot, fn, *args, **kwargs)  # type: ignore[arg-type]
        except BaseException:
            self.release(slot)
            raise
        # cancelled while queued (the pool shut down): _run never runs
        future.add_done_callback(lambda f: self.release(slot) if f.cancelled() else None)
        return future

    def _run(self, slot: _Slot, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        self._local.slot = slot
        try:
            return fn(*args, **kwargs)
        finally:
            self._local.slot = None
            if not slot.handed_off:
                self.release(slot)

    def current(self) -> _Slot | None:
        """The slot of the stream this thread is starting (None off this pool)."""
        return getattr(self._local, "slot", None)  # type: ignore[no-any-return]

    def enter(self, slot: _Slot, peer: str) -> bool:
        """Count the stream against its client's address; False if that address already
        has ``per_peer`` streams open."""
        with self._lock:
            n = self._by_peer.get(peer, 0)
            if n >= self.per_peer:
                return False
            self._by_peer[peer] = n + 1
            slot.peer = peer
            return True

    def hand_off(self, slot: _Slot, context: grpc.ServicerContext) -> None:
        """The stream outlives its worker: release its place when the RPC ends."""
        slot.handed_off = True
        if not context.add_callback(lambda: self.release(slot)):
            self.release(slot)  # it has ended already

    def release(self, slot: _Slot) -> None:
        with self._lock:
            if slot.ended:
                return
            slot.ended = True
            self.held -= 1
            if slot.peer is not None:
                n = self._by_peer[slot.peer] - 1
                if n:
                    self._by_peer[slot.peer] = n
                else:
                    del self._by_peer[slot.peer]


class Lanes:
    """The pools calls run on, with their bounds (sized by server.py)."""

    def __init__(self, *, unary_workers: int, unary_limit: int, max_streams: int,
                 max_streams_per_peer: int, refusal_workers: int = 2,
                 trusted_proxies: Networks = ()) -> None:
        self.unary = CountingPool(unary_workers, "grpc-unary")
        #: unary calls admitted at once, running or waiting for one of the workers
        self.unary_limit = unary_limit
        self.streams = StreamPool(max_streams, max_streams_per_peer, "grpc-stream")
        self.refusals = ThreadPoolExecutor(max_workers=refusal_workers,
                                           thread_name_prefix="grpc-refuse")
        self.trusted_proxies: Networks = tuple(trusted_proxies)
        #: every thread the three pools may start
        self.threads = unary_workers + max_streams + refusal_workers

    def pools(self) -> list[ThreadPoolExecutor]:
        return [self.unary, self.streams, self.refusals]


# -- the interceptor -----------------------------------------------------------------------------


def _on(pool: ThreadPoolExecutor, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """grpcio runs a handler on the pool its behavior names (the hook grpcio-health-
    checking's ``experimental_thread_pool`` uses too)."""
    behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return behavior


def _retry_info() -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=RETRY_AFTER_SECONDS))


def _message_name(method: str, deserializer: Callable[[bytes], Any] | None) -> str:
    """The request message's full name, e.g. ``accounts.v1.GetMeRequest``."""
    service, _, name = method.lstrip("/").partition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
        return str(found.input_type.full_name)
    except KeyError:
        pass
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "") or "request message")


def _why(error: Exception) -> str:
    """protobuf's reason, without its "Error parsing message with type 'x': " prefix."""
    if isinstance(error, UnicodeDecodeError):
        return "a string field is not valid UTF-8"
    text = str(error)
    text = text.split("': ", 1)[1] if "': " in text else text
    if "MaxDepth" in text or "levels of nesting" in text:
        text = "messages nested too deeply"
    return text[:200] or "not a protobuf message"


def _identity(raw: bytes) -> bytes:
    return raw


def _given_request_id(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None


def _echo(context: grpc.ServicerContext, given: str | None) -> str:
    """The call's request id (``given`` if well formed, else a new one), set as trailing
    metadata; an abort replaces trailing metadata, so ``_abort`` adds it again."""
    rid = request_id(given)
    context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
    return rid


_Entry = tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler, grpc.RpcMethodHandler,
               CountingPool | StreamPool | None, int]


class PipelineInterceptor(grpc.ServerInterceptor):
    def __init__(self, pipeline: Pipeline, lanes: Lanes) -> None:
        self._pipeline = pipeline
        self._lanes = lanes
        # method → (the handler it wraps, the wrapper, its refusal, the pool whose count
        # admits it, the bound); the handler is kept (not its id) so that a new handler
        # object for the method is never served a stale wrapper
        self._wrapped: dict[str, _Entry] = {}
        self._malformed_log = ThrottledLog(log)
        self._overload_log = ThrottledLog(log)
        self._streams_log = ThrottledLog(log)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        # grpcio's serving thread, for every call: keep it short
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        entry = self._wrapped.get(method)
        if entry is None or entry[0] is not handler:
            entry = self._wrap(method, handler)
            self._wrapped[method] = entry
        _, served, refusal, pool, bound = entry
        if pool is not None and pool.held >= bound:
            return refusal
        return served

    # -- building the wrappers (once per method) -------------------------------------------
    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> _Entry:
        lanes = self._lanes
        ours = method.startswith(PACKAGE_PREFIX)
        if not handler.request_streaming and not handler.response_streaming:
            overloaded = status_for(
                "RESOURCE_EXHAUSTED",
                f"the server is busy (more than {lanes.unary_limit} calls in flight); "
                f"retry in {RETRY_AFTER_SECONDS} s",
                "OVERLOADED", extra=[_retry_info()],
            )
            refusal = self._refusal(method, overloaded, self._overload_log)
            served = (self._pipeline_unary(method, handler) if ours
                      else self._unary(method, handler))
            return handler, served, refusal, lanes.unary, lanes.unary_limit
        if ours:
            # fail closed: the Pipeline (authentication included) serves unary calls only
            denied = self._refusal(method, status_for(
                "PERMISSION_DENIED",
                "streaming RPCs have no access rule in this server and are denied",
                "NO_ACCESS_RULE",
            ))
            return handler, denied, denied, None, 0
        too_many = status_for(
            "RESOURCE_EXHAUSTED",
            f"the server has too many streams open (the limit is {lanes.streams.cap}); "
            f"retry in {RETRY_AFTER_SECONDS} s",
            "TOO_MANY_STREAMS", {"limit": str(lanes.streams.cap), "scope": "server"},
            extra=[_retry_info()],
        )
        refusal = self._refusal(method, too_many, self._streams_log)
        return handler, self._stream(method, handler), refusal, lanes.streams, lanes.streams.cap

    def _parser(self, method: str,
                handler: grpc.RpcMethodHandler) -> tuple[Callable[[bytes], Any], str]:
        deserializer = handler.request_deserializer
        return deserializer or _identity, _message_name(method, deserializer)

    def _malformed(self, method: str, message: str, error: Exception,
                   context: grpc.ServicerContext, rid: str | None = None) -> NoReturn:
        why = _why(error)
        self._malformed_log.warning("malformed request to %s from %s: %s", method,
                                    peer_address(context.peer()), why)
        if method.startswith(PACKAGE_PREFIX):
            metrics.observe("grpc", method, "INVALID_ARGUMENT", 0.0)
        _abort(context, status_for(
            "INVALID_ARGUMENT", f"the request is not a valid {message}: {why}",
            "MALFORMED_REQUEST", {"message_type": message},
        ), rid)

    def _parse(self, parse: Callable[[bytes], Any], raw: bytes, method: str, message: str,
               context: grpc.ServicerContext, rid: str | None = None) -> Any:
        """The request parsed, or the call aborted as MALFORMED_REQUEST."""
        try:
            return parse(raw)
        except MALFORMED as e:
            self._malformed(method, message, e, context, rid)

    def _pipeline_unary(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        inner = handler.unary_unary
        assert inner is not None
        pipeline = self._pipeline
        parse, message = self._parser(method, handler)

        def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            # the id the client is sent is the one the Pipeline logs
            rid = metadata[REQUEST_ID_KEY] = _echo(context, metadata.get(REQUEST_ID_KEY))
            request = self._parse(parse, raw, method, message, context, rid)
            try:
                return pipeline.call(
                    method, request, metadata, context.peer(), "grpc",
                    lambda req: inner(req, context),
                )
            except CallFailed as e:
                _abort(context, e.status, rid)

        return grpc.unary_unary_rpc_method_handler(
            _on(self._lanes.unary, unary), response_serializer=handler.response_serializer)

    def _unary(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        inner = handler.unary_unary
        assert inner is not None
        parse, message = self._parser(method, handler)

        def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
            rid = _echo(context, _given_request_id(context))
            return inner(self._parse(parse, raw, method, message, context, rid), context)

        return grpc.unary_unary_rpc_method_handler(
            _on(self._lanes.unary, unary), response_serializer=handler.response_serializer)

    def _stream(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        inner: Any = handler.stream_stream or handler.stream_unary or handler.unary_stream
        streaming_in = handler.request_streaming
        non_blocking = bool(getattr(inner, "experimental_non_blocking", False))
        parse, message = self._parser(method, handler)
        streams = self._lanes.streams
        trusted = self._lanes.trusted_proxies
        per_peer = status_for(
            "RESOURCE_EXHAUSTED",
            f"too many streams open from your address (the limit is {streams.per_peer}); "
            f"retry in {RETRY_AFTER_SECONDS} s",
            "TOO_MANY_STREAMS", {"limit": str(streams.per_peer), "scope": "client"},
            extra=[_retry_info()],
        )

        def parsed(raws: Iterable[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            for raw in raws:
                try:
                    request = parse(raw)
                except MALFORMED as e:
                    self._malformed(method, message, e, context)
                yield request

        def start(arg: Any, context: grpc.ServicerContext) -> Any:
            """Parse (or wrap the request stream), then count the stream against its
            client's address, or refuse it."""
            if streaming_in:
                arg = parsed(arg, context)
            else:
                try:
                    arg = parse(arg)
                except MALFORMED as e:
                    self._malformed(method, message, e, context)
            slot = streams.current()
            if slot is not None:  # None: not run by the stream pool (grpcio ignored it)
                metadata = {k: v for k, v in context.invocation_metadata() or ()
                            if isinstance(v, str)}
                client = client_address(peer_address(context.peer()),
                                        metadata.get("x-forwarded-for"), trusted)
                if not streams.enter(slot, client):
                    self._streams_log.warning("stream %s from %s refused: %d open from there",
                                              method, client, streams.per_peer)
                    _abort(context, per_peer)
                if non_blocking:
                    streams.hand_off(slot, context)
            return arg

        behavior: Callable[..., Any]
        if non_blocking:
            def behavior(arg: Any, context: grpc.ServicerContext, send: Any) -> Any:
                return inner(start(arg, context), context, send)

            behavior.experimental_non_blocking = True  # type: ignore[attr-defined]
        else:
            def behavior(arg: Any, context: grpc.ServicerContext) -> Any:
                return inner(start(arg, context), context)

        make = {
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(bool(streaming_in), bool(handler.response_streaming))]
        return make(_on(streams, behavior), response_serializer=handler.response_serializer)

    def _refusal(self, method: str, status: status_pb2.Status,
                 note: ThrottledLog | None = None) -> Any:
        """A handler that answers ``status`` at once: on the refusal pool, never behind
        admitted calls, and stream-stream whatever the method is, so that grpcio does not
        wait for the request message (a client that never sends it cannot hold a thread
        of the pool)."""
        rpc_status = _RpcStatus(status)
        code = code_pb2.Code.Name(status.code)
        counted = method.startswith(PACKAGE_PREFIX)
        reason = status.message

        def refuse(_requests: Any, context: grpc.ServicerContext) -> Any:
            if note is not None:
                note.warning("refused %s from %s: %s", method,
                             peer_address(context.peer()), reason)
            if counted:
                metrics.observe("grpc", method, code, 0.0)
            context.abort_with_status(rpc_status.echoing(request_id(_given_request_id(context))))

        return grpc.stream_stream_rpc_method_handler(_on(self._lanes.refusals, refuse))


def _abort(context: grpc.ServicerContext, status: status_pb2.Status,
           rid: str | None = None) -> NoReturn:
    context.abort_with_status(_RpcStatus(status, rid))
    raise AssertionError("unreachable")  # abort_with_status raises


class _RpcStatus(grpc.Status):  # type: ignore[misc]
    """grpc.Status carrying google.rpc.Status details in ``grpc-status-details-bin``, and
    the call's request id (when it has one) in ``x-request-id``."""

    def __init__(self, status: Any, rid: str | None = None) -> None:
        self.code = grpc_code(status)
        self.details = status.message
        self.trailing_metadata: tuple[tuple[str, str | bytes], ...] = (
            ("grpc-status-details-bin", status.SerializeToString()),)
        if rid:
            self.trailing_metadata += ((REQUEST_ID_KEY, rid),)

    def echoing(self, rid: str) -> _RpcStatus:
        """This status, for a call whose request id is ``rid`` (nothing serialized again)."""
        out = copy.copy(self)
        out.trailing_metadata = (*self.trailing_metadata, (REQUEST_ID_KEY, rid))
        return out
