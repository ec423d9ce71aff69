"""A REST call that must fail, checked as grpc-gateway writes errors (no tests here).

The error tests of each service prove the mapping of domain errors end to end on both
transports: over gRPC with tests.support.expect_error, over REST with ``rest_error``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import httpx

from tests.support import Server

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def rest_error(
    server: Server,
    method: str,
    path: str,
    *,
    token: str,
    status: int,
    code: grpc.StatusCode,
    reason: str,
    field: str | None = None,
    body: Any = None,
    snapshot: Callable[[Server], object] | None = None,
) -> dict[str, Any]:
    """Call ``method path`` (JSON ``body``) with ``token``; assert the HTTP ``status`` and
    the grpc-gateway body: the gRPC ``code`` number, a message, ErrorInfo (domain
    accounts.v1, ``reason``) and, for ``field``, a BadRequest violation of it; and that
    the ``snapshot`` of the database is as it was."""
    before = snapshot(server) if snapshot else None
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        r = c.request(method, path, json=body, headers={"authorization": f"Bearer {token}"})
    if snapshot:
        assert snapshot(server) == before, "a failed call changed the database"
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    out = r.json()
    assert set(out) == {"code", "message", "details"}, out
    assert out["code"] == code.value[0] and out["message"], out
    assert "Traceback" not in out["message"]
    infos = [d for d in out["details"] if d["@type"] == ERROR_INFO]
    assert infos and infos[0]["domain"] == "accounts.v1", out
    assert infos[0]["reason"] == reason, out
    if field is not None:
        bad = [d for d in out["details"] if d["@type"] == BAD_REQUEST]
        fields = [v["field"] for d in bad for v in d["fieldViolations"]]
        assert field in fields, f"expected a violation of {field}, got {fields}"
    return dict(out)
