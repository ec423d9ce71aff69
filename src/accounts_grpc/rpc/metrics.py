"""Prometheus metrics for every call, gRPC and REST alike (served at /metrics)."""

from __future__ import annotations

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


def observe(transport: str, method: str, code: str, seconds: float) -> None:
    CALLS.labels(transport, method, code).inc()
    LATENCY.labels(transport, method).observe(seconds)
    if code != "OK":
        ERRORS.labels(transport, method, code).inc()
