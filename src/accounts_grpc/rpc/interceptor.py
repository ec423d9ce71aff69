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
- **The request message.** grpcio reads the one request message of a unary-request
  method on the worker, before the handler runs: a client that never sent it held a
  worker until its deadline, with no token. Every such method (unary calls, health
  ``Watch``, ``WatchEvents``) is declared request-streaming instead, and the wrapper
  reads the message itself, its wait bounded by ``Unsent``: a call still without one
  after a second counts against its client address (``--grpc-max-unsent-per-peer``) and
  in all (``--grpc-max-unsent``), and ends at ``--grpc-message-timeout``. A unary call
  waits for its message on a thread beside the workers and takes one of the workers'
  places (``Lanes.places``, first come first served) only once it has it. As with grpcio,
  nothing after the first message is read (checking would cost a second round trip).
  Per call this costs about 3 µs in the wrapper (GetMe over a channel, 2 shared cores:
  server CPU +6 to +24 µs on about 400-500 µs, latency within the noise).
- **Parsing.** grpcio gets ``request_deserializer=None`` (raw bytes) and the wrapper
  parses: bytes that are not the request message (garbage, invalid UTF-8 in a string,
  nesting deeper than protobuf's limit of 100, another message type that does not parse)
  are INVALID_ARGUMENT with ErrorInfo MALFORMED_REQUEST and at most one short log line a
  second, where grpcio would answer INTERNAL and log a traceback for each. In a request
  stream, a bad message ends the stream the same way.
- **The Pipeline** (authentication, authorization, errors, the call's log line) for
  accounts.v1 unary calls and server streams (``WatchEvents``, on the stream pool and
  counted against its caps); any other streaming accounts.v1 RPC is refused, never
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
from collections import deque
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


#: a request message normally comes with its call; one still missing after this long (at
#: most half the message timeout) makes the call *unsent*
UNSENT_AFTER = 1.0


class _Wait:
    """A call waiting for its request message (``Unsent.enter`` to ``leave``)."""

    __slots__ = ("context", "ended", "peer", "since", "unsent")

    def __init__(self, context: grpc.ServicerContext, peer: str, since: float) -> None:
        self.context = context
        self.peer = peer
        self.since = since
        self.unsent = False
        #: why the watchdog ended it: (code, message), for the log and the metrics
        self.ended: tuple[grpc.StatusCode, str] | None = None


class Unsent:
    """The calls waiting for their request message, and the one thread that ends those
    that wait too long.

    grpcio reads a call's request message on the thread that serves it, so a call whose
    message never comes would hold its thread until its deadline (for ever without one),
    and needs no token to do it. A message normally comes with its call: waiting a
    moment is nothing, and a burst of good calls from one address (a thousand at once
    kept 30 to 80 of them waiting, up to 0.8 s) must not be refused for it. So the limits
    count the calls still waiting after ``UNSENT_AFTER``, the *unsent* ones:

    - at most ``per_peer`` of them from one client address and ``cap`` in all are kept
      (each holds a thread beside the workers'); another is ended then with
      RESOURCE_EXHAUSTED;
    - while an address has ``per_peer`` of them, ``enter`` refuses its new calls (the
      caller answers TOO_MANY_PENDING_CALLS with RetryInfo), and for ``timeout`` after
      one of its calls was ended, so is any call past ``per_peer`` of its calls waiting
      at once (a client that opens them again and again gets no second burst);
    - a call whose message has not come ``timeout`` after it started is ended with
      DEADLINE_EXCEEDED.

    The watchdog can only cancel a call (grpcio lets a call's own thread alone abort
    it): its client sees the code and message, without ErrorInfo or a request id.
    """

    def __init__(self, cap: int, per_peer: int, timeout: float) -> None:
        self.cap = cap
        self.per_peer = per_peer
        self.timeout = timeout
        self._after = min(UNSENT_AFTER, timeout / 2)
        self._lock = threading.Lock()
        #: the calls waiting, oldest first (a dict keeps its order; a set would not)
        self._waits: dict[_Wait, None] = {}
        self._waiting: dict[str, int] = {}  # address → calls waiting (unsent or not)
        self._unsent: dict[str, int] = {}  # address → unsent calls kept
        self.total = 0  # unsent calls kept, in all
        self._suspect: dict[str, float] = {}  # address → until when it is capped at once
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="grpc-unsent", daemon=True)
        self._thread.start()

    def unsent(self, peer: str) -> int:
        """How many unsent calls of ``peer`` are kept."""
        return self._unsent.get(peer, 0)

    def enter(self, context: grpc.ServicerContext, peer: str) -> _Wait | None:
        """The call waits for its message from now; None: refuse it instead."""
        with self._lock:
            waiting = self._waiting.get(peer, 0)
            unsent = self._unsent.get(peer, 0)
            if unsent >= self.per_peer or (
                    waiting - unsent >= self.per_peer and peer in self._suspect):
                return None
            self._waiting[peer] = waiting + 1
            wait = _Wait(context, peer, time.monotonic())
            self._waits[wait] = None
        return wait

    def leave(self, wait: _Wait) -> None:
        """The message came, or the call ended."""
        peer = wait.peer
        with self._lock:
            del self._waits[wait]
            _decrement(self._waiting, peer)
            if wait.unsent:
                _decrement(self._unsent, peer)
                self.total -= 1

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._closed.wait(self._after / 4):
            self._sweep(time.monotonic())

    def _sweep(self, now: float) -> None:
        ending: list[_Wait] = []
        with self._lock:
            for wait in self._waits:
                if wait.since > now - self._after:
                    break  # the rest are younger
                if wait.ended is not None:
                    continue
                peer = wait.peer
                if wait.unsent:
                    if wait.since <= now - self.timeout:
                        wait.ended = (grpc.StatusCode.DEADLINE_EXCEEDED, (
                            f"the request message did not come within {self.timeout:g} s"))
                elif self._unsent.get(peer, 0) >= self.per_peer:
                    wait.ended = (grpc.StatusCode.RESOURCE_EXHAUSTED, (
                        f"more than {self.per_peer} calls from your address have not sent "
                        f"their request message; retry in {RETRY_AFTER_SECONDS} s"))
                elif self.total >= self.cap:
                    wait.ended = (grpc.StatusCode.RESOURCE_EXHAUSTED, (
                        f"more than {self.cap} calls have not sent their request message; "
                        f"retry in {RETRY_AFTER_SECONDS} s"))
                else:
                    wait.unsent = True
                    self._unsent[peer] = self._unsent.get(peer, 0) + 1
                    self.total += 1
                if wait.ended is not None:
                    ending.append(wait)
                    self._suspect[peer] = now + self.timeout
            for peer, until in list(self._suspect.items()):
                if until <= now:
                    del self._suspect[peer]
        for wait in ending:
            assert wait.ended is not None
            _end(wait.context, *wait.ended)


def _decrement(counts: dict[str, int], key: str) -> None:
    n = counts[key] - 1
    if n:
        counts[key] = n
    else:
        del counts[key]


def _end(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """End a call from another thread than its own. grpcio's context can only cancel it
    (its client sees CANCELLED); grpcio's core call cancels it with a status, so its
    client sees ``code`` and ``message`` (tracing's context wrapper passes the attribute
    through)."""
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    if call is None:
        context.cancel()
    else:
        call.cancel(code.value[0], message)


class _Places:
    """The workers' places, taken in turn: a call that ends hands its place to the one
    that has waited longest (first come, first served, as a pool's queue is)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._lock = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()

    def take(self) -> bool:
        """Take a place: True if one was free, False once one was handed over."""
        with self._lock:
            if self._free:
                self._free -= 1
                return True
            handed = threading.Lock()
            handed.acquire()
            self._waiting.append(handed)
        handed.acquire()
        return False

    def give(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._free += 1


class Lanes:
    """The pools calls run on, with their bounds (sized by server.py)."""

    def __init__(self, *, unary_workers: int, unary_limit: int, max_streams: int,
                 max_streams_per_peer: int, max_unsent: int = 64,
                 max_unsent_per_peer: int = 16, message_timeout: float = 10.0,
                 refusal_workers: int = 2, trusted_proxies: Networks = ()) -> None:
        # a thread for each call that runs, and one for each unsent call kept: those
        # cannot take the workers' places
        self.unary = CountingPool(unary_workers + max_unsent, "grpc-unary")
        self.places = _Places(unary_workers)
        #: unary calls admitted at once, running or waiting (for a place or a message)
        self.unary_limit = unary_limit
        self.unsent = Unsent(max_unsent, max_unsent_per_peer, message_timeout)
        self.streams = StreamPool(max_streams, max_streams_per_peer, "grpc-stream")
        self.refusals = ThreadPoolExecutor(max_workers=refusal_workers,
                                           thread_name_prefix="grpc-refuse")
        self.trusted_proxies: Networks = tuple(trusted_proxies)
        #: every thread the three pools may start
        self.threads = unary_workers + max_unsent + max_streams + refusal_workers

    def pools(self) -> list[ThreadPoolExecutor]:
        return [self.unary, self.streams, self.refusals]

    def close(self) -> None:
        self.unsent.close()

    def run(self, context: grpc.ServicerContext) -> None:
        """Take one of the workers' places (``places.give()`` it back after); a call
        that ended while it waited for one is not run."""
        if not self.places.take() and not context.is_active():
            self.places.give()
            # its client has gone (cancelled, past its deadline, the drain's grace):
            # nothing reaches it, as grpcio skips a call cancelled in its queue
            context.abort(grpc.StatusCode.CANCELLED, "the call ended before it ran")


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


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


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
        self._unsent_log = ThrottledLog(log)
        per_peer = lanes.unsent.per_peer
        self._pending = status_for(
            "RESOURCE_EXHAUSTED",
            f"too many calls from your address have not sent their request message (the "
            f"limit is {per_peer}); retry in {RETRY_AFTER_SECONDS} s",
            "TOO_MANY_PENDING_CALLS", {"limit": str(per_peer), "scope": "client"},
            extra=[_retry_info()],
        )

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
        if not handler.request_streaming and not handler.response_streaming:
            overloaded = status_for(
                "RESOURCE_EXHAUSTED",
                f"the server is busy (more than {lanes.unary_limit} calls in flight); "
                f"retry in {RETRY_AFTER_SECONDS} s",
                "OVERLOADED", extra=[_retry_info()],
            )
            refusal = self._refusal(method, overloaded, self._overload_log)
            return handler, self._unary(method, handler), refusal, lanes.unary, lanes.unary_limit
        if method.startswith(PACKAGE_PREFIX) and (handler.request_streaming
                                                  or not handler.response_streaming):
            # fail closed: the Pipeline (authentication included) serves unary calls and
            # server streams only
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

    def _malformed(self, method: str, message: str, why: str,
                   context: grpc.ServicerContext, rid: str | None = None) -> NoReturn:
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
            self._malformed(method, message, _why(e), context, rid)

    def _message(self, requests: Iterator[bytes], context: grpc.ServicerContext, method: str,
                 message: str, peer: str, rid: str | None) -> bytes:
        """The call's one request message, read here rather than by grpcio (the handler
        is declared request-streaming) so that its wait is bounded (``Unsent``). Nothing
        after it is read, as grpcio reads nothing more for a unary method."""
        unsent = self._lanes.unsent
        wait = unsent.enter(context, peer)
        if wait is None:
            self._unsent_log.warning("refused %s from %s: %d calls from there have not "
                                     "sent their message", method, peer, unsent.per_peer)
            if method.startswith(PACKAGE_PREFIX):
                metrics.observe("grpc", method, "RESOURCE_EXHAUSTED", 0.0)
            _abort(context, self._pending, rid)
        try:
            raw: bytes | None = next(requests, None)
        except grpc.RpcError:  # cancelled: by its client, the drain or the watchdog
            if wait.ended is None:
                raise
            raw = None
        finally:
            unsent.leave(wait)
        if wait.ended is not None:
            # the watchdog has ended the call (its client has the status; here it may
            # read as the request stream's end, or as a message that came just then)
            code, why = wait.ended
            self._unsent_log.warning("%s from %s ended: %s", method, peer, why)
            if method.startswith(PACKAGE_PREFIX):
                metrics.observe("grpc", method, code.name, 0.0)
            context.abort(code, why)  # nothing more is sent: this only ends the handler
        if raw is None:
            self._malformed(method, message, "the call ended without a request message "
                            "(this method takes exactly one)", context, rid)
        return raw

    def _unary(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        """A unary method served as request-streaming: the message is read by
        ``_message``, and the call runs once it holds one of the workers' places."""
        inner = handler.unary_unary
        assert inner is not None
        pipeline = self._pipeline if method.startswith(PACKAGE_PREFIX) else None
        parse, message = self._parser(method, handler)
        lanes = self._lanes
        trusted = lanes.trusted_proxies

        def unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            metadata = _metadata(context)
            # the id the client is sent is the one the Pipeline logs
            rid = metadata[REQUEST_ID_KEY] = _echo(context, metadata.get(REQUEST_ID_KEY))
            peer = client_address(peer_address(context.peer()),
                                  metadata.get("x-forwarded-for"), trusted)
            raw = self._message(requests, context, method, message, peer, rid)
            request = self._parse(parse, raw, method, message, context, rid)
            lanes.run(context)
            try:
                if pipeline is None:
                    return inner(request, context)
                return pipeline.call(method, request, metadata, context.peer(), "grpc",
                                     lambda req: inner(req, context))
            except CallFailed as e:
                _abort(context, e.status, rid)
            finally:
                lanes.places.give()

        return grpc.stream_unary_rpc_method_handler(
            _on(lanes.unary, unary), response_serializer=handler.response_serializer)

    def _stream(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        inner: Any = handler.stream_stream or handler.stream_unary or handler.unary_stream
        streaming_in = handler.request_streaming
        non_blocking = bool(getattr(inner, "experimental_non_blocking", False))
        parse, message = self._parser(method, handler)
        streams = self._lanes.streams
        trusted = self._lanes.trusted_proxies
        piped = method.startswith(PACKAGE_PREFIX)  # an accounts.v1 server stream
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
                    self._malformed(method, message, _why(e), context)
                yield request

        def start(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            """Count the stream against its client's address (or refuse it), then wrap
            the request stream, or read and parse its one message (a unary-request method
            is served as request-streaming, so that the wait for it is bounded)."""
            client = client_address(peer_address(context.peer()),
                                    _metadata(context).get("x-forwarded-for"), trusted)
            slot = streams.current()
            if slot is not None:  # None: not run by the stream pool (grpcio ignored it)
                if not streams.enter(slot, client):
                    self._streams_log.warning("stream %s from %s refused: %d open from there",
                                              method, client, streams.per_peer)
                    _abort(context, per_peer)
                if non_blocking:
                    streams.hand_off(slot, context)
            if streaming_in:
                return parsed(requests, context)
            raw = self._message(requests, context, method, message, client, None)
            return self._parse(parse, raw, method, message, context)

        behavior: Callable[..., Any]
        if non_blocking:
            def behavior(arg: Any, context: grpc.ServicerContext, send: Any) -> Any:
                return inner(start(arg, context), context, send)

            behavior.experimental_non_blocking = True  # type: ignore[attr-defined]
        else:
            def behavior(arg: Any, context: grpc.ServicerContext) -> Any:
                if piped:
                    return self._piped(method, inner, start(arg, context), context)
                return inner(start(arg, context), context)

        make = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
                else grpc.stream_unary_rpc_method_handler)
        return make(_on(streams, behavior), response_serializer=handler.response_serializer)

    def _piped(self, method: str, inner: Callable[..., Any], request: Any,
               context: grpc.ServicerContext) -> Iterator[Any]:
        """An accounts.v1 server stream, through the Pipeline (authentication and all, on
        the stream pool): a failure before the first message aborts here, a later one
        from the iterator. A heartbeat (None) only checks that the client is there."""
        metadata = _metadata(context)
        rid = metadata[REQUEST_ID_KEY] = _echo(context, metadata.get(REQUEST_ID_KEY))
        try:
            messages = self._pipeline.stream(method, request, metadata, context.peer(), "grpc",
                                             lambda req: inner(req, context))
        except CallFailed as e:
            _abort(context, e.status, rid)
        # the headers now: the client knows the stream is open before its first message
        context.send_initial_metadata(((REQUEST_ID_KEY, rid),))
        return _sent(messages, context, rid)

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


def _sent(messages: Iterator[Any], context: grpc.ServicerContext,
          rid: str) -> Iterator[Any]:
    """What ``_piped`` sends: the messages, heartbeats left out; it ends when the client
    has gone, and aborts with the status of a failure."""
    try:
        for message in messages:
            if message is not None:
                yield message
            elif not context.is_active():
                return
    except CallFailed as e:
        _abort(context, e.status, rid)
    finally:
        close = getattr(messages, "close", None)
        if close is not None:
            close()


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
