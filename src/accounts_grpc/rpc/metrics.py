"""Prometheus metrics for every call, gRPC and REST alike (served at /metrics).

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
gauges.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: set by the supervisor before the worker imported prometheus_client (which reads it then)
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS = Counter(
    "accounts_rpc_calls",
    "Calls served, by transport, RPC and status code.",
    ["transport", "method", "code"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "accounts_rpc_duration_seconds",
    "Time to serve a call, by transport and RPC.",
    ["transport", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
ERRORS = Counter(
    "accounts_rpc_errors",
    "Calls that ended with a status other than OK, by transport, RPC and code.",
    ["transport", "method", "code"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "accounts_http_requests",
    "HTTP requests that matched no RPC (health, metrics, OpenAPI, 404/405), by path and status.",
    ["path", "status"],
    registry=REGISTRY,
)
# Counters and histograms are summed over the processes. Gauges say how:
PROCESSES = Gauge(
    "accounts_serving_processes",
    "Processes serving calls (the live workers under a supervisor; 1 without one).",
    multiprocess_mode="livesum",  # each live worker adds its 1; an exited one drops out
    registry=REGISTRY,
)
# The one metric that cannot be summed: a start time. Each live worker keeps a series of
# its own (a ``pid`` label added by the collector), so a restart shows as a new series.
STARTED = Gauge(
    "accounts_process_start_time_seconds",
    "When the serving process started, seconds since the epoch (one series per live "
    "worker process, labelled pid, under a supervisor).",
    multiprocess_mode="liveall",
    registry=REGISTRY,
)


def process_started() -> None:
    """Count this process among the serving ones (once, as it starts serving)."""
    PROCESSES.set(1)
    STARTED.set(time.time())


def scrape_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, or, under a supervisor, every
    worker's values read from the multiprocess directory (a registry made per scrape, as
    the library's docs say: the live metrics must not be registered to it)."""
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


# ``labels()`` costs tens of microseconds (it validates and locks on every call); the
# labelled children never change, so each is looked up once and kept here.
_children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}


def observe(transport: str, method: str, code: str, seconds: float) -> None:
    key = (transport, method, code)
    c = _children.get(key)
    if c is None:
        c = (
            CALLS.labels(transport, method, code),
            LATENCY.labels(transport, method),
            ERRORS.labels(transport, method, code) if code != "OK" else None,
        )
        _children[key] = c
    c[0].inc()
    c[1].observe(seconds)
    if c[2] is not None:
        c[2].inc()
