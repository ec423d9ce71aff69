"""Prometheus metrics for every call, gRPC and REST alike (served at /metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

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
