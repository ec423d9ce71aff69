"""Prometheus metrics (served at /metrics), named as the ecosystem names them.

**gRPC**: go-grpc-prometheus' names and labels, which grpc-ecosystem/go-grpc-middleware's
``providers/prometheus`` keeps, so that dashboards and alerts made for them work as they
are: ``grpc_server_started_total``, ``grpc_server_handled_total`` (with ``grpc_code``,
the code as Go names it: ``OK``, ``InvalidArgument``, ``Unauthenticated`` ...),
``grpc_server_handling_seconds`` (a histogram), ``grpc_server_msg_received_total`` and
``grpc_server_msg_sent_total``, each labelled ``grpc_type`` (from the method's
descriptor: ``unary``, or ``server_stream`` for ``WatchEvents``), ``grpc_service`` and
``grpc_method``. As there, a call receives one message; a unary call sends one when it
answers OK, a stream one per message; a stream is handled (and timed) when it ends; and a
call refused before it ran (a malformed request, the server over its limits) is started
and handled at once. Health and reflection are not counted.

**REST**: OpenTelemetry's HTTP semantic conventions as Prometheus names them:
``http_server_request_duration_seconds`` (a histogram; its ``_count`` counts the
requests) labelled ``http_request_method`` (``_OTHER`` for a method HTTP does not
define), ``http_route`` (the route's template, ``/v1/users/{user.user_id}``, or the fixed
path; empty for a request that matched none, so no path a client makes up becomes a
label) and ``http_response_status_code`` (empty if the client left before an answer).
Every HTTP request is counted there once, refusals before any call (413, 408, 429)
included, timed from its arrival at the shim to its answer.

A REST call that maps to an RPC is also visible as that RPC: its series carry
``grpc_service`` and ``grpc_method``, with the names and values of the gRPC series (empty
for /healthz, /metrics and the like), rather than being counted again under
``grpc_server_*``. Those stay what go-grpc-prometheus would count on this port, and what
gRPC clients' own metrics compare with, and no call is counted twice. One RPC over both
transports is ``sum by (grpc_service, grpc_method)`` of ``rate(grpc_server_handled_total)``
plus that of ``rate(http_server_request_duration_seconds_count{grpc_method!=""})``.

**The rest**: ``accounts_calls_in_flight{transport}`` (gRPC: calls in the pipeline; REST:
HTTP requests being answered), the database pool (``accounts_db_pool_size``,
``_checked_out``, ``_overflow``, ``_waiting``: store/pool.py), ``process_*``
(prometheus_client's process collector) and ``accounts_serving_processes``. No series
says what another one does: no errors counter (``grpc_server_handled_total{grpc_code!="OK"}``
is one), no start-time gauge beside ``process_start_time_seconds``, and no ``_created``
series (``disable_created_metrics``).

One process (``serve --processes 1``): the metrics live in ``REGISTRY``, in memory.

Several (``serve --processes N``): prometheus_client's multiprocess mode. The supervisor
sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory in every worker's environment, so
the library, imported after, keeps each value in a file of that directory per process;
whichever worker answers ``/metrics`` reads every worker's files
(``MultiProcessCollector``) and sums them, dead workers' counts included, so a counter
never goes back when a worker is restarted. What that mode cannot do (the library's
docs): no custom collectors, no ``set_function`` gauges, no Info or Enum, and a gauge
must say how the values of the processes combine (``multiprocess_mode``); the
supervisor calls ``mark_process_dead`` for an exited worker, which drops its ``live*``
gauges. The gauges here are ``livesum``: the sum over the live workers.

``process_*`` under a supervisor: as no collector may write the workers' files, the
worker that answers /metrics reads every live worker's ``/proc/<pid>`` as it is scraped
(the process collector, pointed at each), one series per worker labelled ``pid``. The
live workers are those whose live-gauge file is in the directory
(``mark_process_dead`` removes a dead one's).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pool
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    disable_created_metrics,
)
from prometheus_client.process_collector import ProcessCollector

from accounts_grpc.store.pool import PoolState

#: set by the supervisor before the worker imported prometheus_client (which reads it then)
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
GRPC, REST = "grpc", "rest"

disable_created_metrics()  # a counter's _created series doubles the output, for nothing
REGISTRY = CollectorRegistry(auto_describe=True)
if not MULTIPROCESS:
    ProcessCollector(registry=REGISTRY)

#: from well under a millisecond (most calls) to seconds
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0)
_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

STARTED = Counter("grpc_server_started", "Total number of RPCs started on the server.",
                  _GRPC_LABELS, registry=REGISTRY)
HANDLED = Counter(
    "grpc_server_handled",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    (*_GRPC_LABELS, "grpc_code"), registry=REGISTRY)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level "
    "handled by the server.", _GRPC_LABELS, buckets=BUCKETS, registry=REGISTRY)
RECEIVED = Counter("grpc_server_msg_received",
                   "Total number of RPC stream messages received on the server.",
                   _GRPC_LABELS, registry=REGISTRY)
SENT = Counter("grpc_server_msg_sent",
               "Total number of gRPC stream messages sent by the server.",
               _GRPC_LABELS, registry=REGISTRY)
HTTP_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests; grpc_service and grpc_method name the RPC a REST "
    "route maps to.",
    ("http_request_method", "http_route", "http_response_status_code", "grpc_service",
     "grpc_method"), buckets=BUCKETS, registry=REGISTRY)
# Counters and histograms are summed over the processes. Gauges say how:
IN_FLIGHT = Gauge(
    "accounts_calls_in_flight",
    "Calls being served now: gRPC calls in the pipeline, REST requests being answered.",
    ["transport"], multiprocess_mode="livesum", registry=REGISTRY)
_GRPC_IN_FLIGHT, _REST_IN_FLIGHT = IN_FLIGHT.labels(GRPC), IN_FLIGHT.labels(REST)
#: the store's pool, in PoolState's order (store/pool.py says what each counts)
POOL = (
    Gauge("accounts_db_pool_size", "Database connections the pools keep open once made.",
          multiprocess_mode="livesum", registry=REGISTRY),
    Gauge("accounts_db_pool_checked_out",
          "Database connections in use (on SQLite each worker thread keeps one for its "
          "reads).", multiprocess_mode="livesum", registry=REGISTRY),
    Gauge("accounts_db_pool_overflow", "Database connections open beyond the pool size.",
          multiprocess_mode="livesum", registry=REGISTRY),
    Gauge("accounts_db_pool_waiting",
          "Calls waiting for a database connection (every one in use, no more may open).",
          multiprocess_mode="livesum", registry=REGISTRY),
)
PROCESSES = Gauge(
    "accounts_serving_processes",
    "Processes serving calls (the live workers under a supervisor; 1 without one).",
    multiprocess_mode="livesum",  # each live worker adds its 1; an exited one drops out
    registry=REGISTRY,
)

#: HTTP's methods (RFC 9110, PATCH); any other becomes _OTHER, as OpenTelemetry says
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                           "TRACE", "PATCH"})
#: a live worker's gauge file, named by prometheus_client ``gauge_livesum_<pid>.db``
_LIVE_FILE = re.compile(r"gauge_livesum_(\d+)\.db")


def process_started() -> None:
    """Count this process among the serving ones (once, as it starts serving)."""
    PROCESSES.set(1)


def go_code(code: str) -> str:
    """A gRPC code as Go names it (``INVALID_ARGUMENT`` → ``InvalidArgument``)."""
    if code in ("OK", "CANCELLED"):
        return "OK" if code == "OK" else "Canceled"
    return "".join(word.capitalize() for word in code.split("_"))


def _rpc_labels(rpc: str) -> tuple[str, str]:
    """``/accounts.v1.UserService/GetMe`` → (``accounts.v1.UserService``, ``GetMe``)."""
    service, _, method = rpc.lstrip("/").partition("/")
    return service, method


def _grpc_type(service: str, method: str) -> str:
    """``unary``, ``server_stream``, ``client_stream`` or ``bidi_stream``, as the method's
    descriptor says (go-grpc-prometheus' ``grpc_type``)."""
    try:
        found = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    except KeyError:
        return "unary"
    return {(False, False): "unary", (False, True): "server_stream",
            (True, False): "client_stream", (True, True): "bidi_stream"}[
        (found.client_streaming, found.server_streaming)]


class Rpc:
    """The series of one RPC, looked up once: ``labels()`` costs tens of microseconds (it
    validates and locks on every call). A stream counts each message it sends
    (``sent.inc()``); a unary call sends its one when it answers OK."""

    __slots__ = ("_handled", "_labels", "handling", "received", "sent", "started", "unary")

    def __init__(self, method: str) -> None:
        service, name = _rpc_labels(method)
        labels = (_grpc_type(service, name), service, name)
        self.unary = labels[0] == "unary"
        self._labels = labels
        self.started = STARTED.labels(*labels)
        self.received = RECEIVED.labels(*labels)
        self.sent = SENT.labels(*labels)
        self.handling = HANDLING.labels(*labels)
        self._handled: dict[str, Any] = {}

    def begin(self) -> Rpc:
        """The call starts running (in flight until ``end``)."""
        self.started.inc()
        self.received.inc()
        _GRPC_IN_FLIGHT.inc()
        return self

    def end(self, code: str, seconds: float) -> None:
        _GRPC_IN_FLIGHT.dec()
        self.finish(code, seconds)

    def finish(self, code: str, seconds: float) -> None:
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = HANDLED.labels(*self._labels, go_code(code))
        handled.inc()
        self.handling.observe(seconds)
        if code == "OK" and self.unary:
            self.sent.inc()


_rpcs: dict[str, Rpc] = {}


def rpc(method: str) -> Rpc:
    """The series of ``method`` (``/accounts.v1.UserService/GetMe``)."""
    found = _rpcs.get(method)
    if found is None:  # two threads may both make it: the same children, no harm
        found = _rpcs[method] = Rpc(method)
    return found


def observe(transport: str, method: str, code: str, seconds: float) -> None:
    """A gRPC call refused before it ran (interceptor.py): started and handled at once.
    REST refusals are counted with their HTTP request (``http_ended``)."""
    if transport == GRPC:
        r = rpc(method)
        r.started.inc()
        r.received.inc()
        r.finish(code, seconds)


_http: dict[tuple[str, str, str, int], Any] = {}


def http_started() -> None:
    _REST_IN_FLIGHT.inc()


def http_ended(method: str, route: str, rpc_method: str, status: int,
               seconds: float) -> None:
    """An HTTP request answered (``status`` 0: its client left first): ``route`` is the
    matched template or fixed path ("" for none), ``rpc_method`` the RPC it maps to."""
    _REST_IN_FLIGHT.dec()
    method = method if method in _HTTP_METHODS else "_OTHER"
    key = (method, route, rpc_method, status)
    child = _http.get(key)
    if child is None:
        service, name = _rpc_labels(rpc_method) if rpc_method else ("", "")
        child = _http[key] = HTTP_DURATION.labels(method, route, str(status) if status else "",
                                                  service, name)
    child.observe(seconds)


_pool_last: PoolState | None = None


def pool_state(state: PoolState) -> None:
    """The store's pool changed (reported one change at a time): set what moved."""
    global _pool_last
    for i, gauge in enumerate(POOL):
        if _pool_last is None or state[i] != _pool_last[i]:
            gauge.set(state[i])
    _pool_last = state


def scrape_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, or, under a supervisor, every
    worker's values read from the multiprocess directory and every live worker's
    ``process_*`` (a registry made per scrape, as the library's docs say: the live
    metrics must not be registered to it)."""
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_WorkerProcesses(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    return registry


class _WorkerProcesses:
    """``process_*`` of every live worker, read from ``/proc`` when scraped, one series
    per worker labelled ``pid``."""

    def __init__(self, directory: str) -> None:
        self._dir = directory

    def collect(self) -> Iterable[Metric]:
        try:
            names = os.listdir(self._dir)
        except OSError:
            return []
        pids = sorted({int(m[1]) for n in names if (m := _LIVE_FILE.fullmatch(n))})
        families: dict[str, Metric] = {}
        for pid in pids:
            collector = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in collector.collect():
                out = families.get(family.name)
                if out is None:
                    out = families[family.name] = Metric(family.name, family.documentation,
                                                         family.type)
                out.samples += [s._replace(labels={**s.labels, "pid": str(pid)})
                                for s in family.samples]
        return list(families.values())
