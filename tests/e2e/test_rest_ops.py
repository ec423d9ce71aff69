"""/healthz, /readyz and /metrics of the HTTP side, and the OpenAPI document."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts.v1 import user_service_pb2
from openapi_spec_validator import validate

from accounts_grpc.rest import openapi
from tests.support import Server, sample

ROOT = Path(__file__).resolve().parents[2]


# -- health -------------------------------------------------------------------------------------


def test_healthz(server: Server) -> None:
    r = httpx.get(f"{server.http_url}/healthz")
    assert r.status_code == 200 and r.text == "ok\n"


def test_readyz(server: Server) -> None:
    r = httpx.get(f"{server.http_url}/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_readyz_is_503_while_draining(server: Server) -> None:
    server.app.draining = True
    try:
        r = httpx.get(f"{server.http_url}/readyz")
    finally:
        server.app.draining = False
    assert r.status_code == 503
    assert r.json() == {"ready": False, "reason": "draining"}
    assert httpx.get(f"{server.http_url}/healthz").status_code == 200


def test_readyz_is_503_when_the_database_is_down(server: Server,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> bool:
        return False

    monkeypatch.setattr(server.app.db, "ping", down)
    r = httpx.get(f"{server.http_url}/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "reason": "database unreachable"}


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_cover_grpc_and_rest_calls_latencies_and_errors(server: Server) -> None:
    url = server.http_url
    me = "/accounts.v1.UserService/GetMe"
    before = httpx.get(f"{url}/metrics").text
    server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    assert httpx.get(f"{url}/v1/me", headers={"authorization": f"Bearer {server.admin_token}"}
                     ).status_code == 200
    assert httpx.get(f"{url}/v1/me").status_code == 401
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = r.text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("accounts_rpc_calls_total", transport="grpc", method=me, code="OK") == 1
    assert delta("accounts_rpc_calls_total", transport="rest", method=me, code="OK") == 1
    assert delta("accounts_rpc_calls_total", transport="rest", method=me,
                 code="UNAUTHENTICATED") == 1
    assert delta("accounts_rpc_errors_total", transport="rest", method=me,
                 code="UNAUTHENTICATED") == 1
    assert delta("accounts_rpc_duration_seconds_count", transport="rest", method=me) == 2
    assert delta("accounts_rpc_duration_seconds_count", transport="grpc", method=me) == 1
    assert sample(after, "accounts_rpc_duration_seconds_bucket", transport="rest", method=me,
                  le="+Inf") >= 2


def test_transcoding_errors_count_as_errors_of_the_rpc(server: Server) -> None:
    url = server.http_url
    create = "/accounts.v1.AccountService/CreateAccount"
    before = httpx.get(f"{url}/metrics").text
    r = httpx.post(f"{url}/v1/accounts", content=b"{", headers={
        "authorization": f"Bearer {server.admin_token}"})
    assert r.status_code == 400
    after = httpx.get(f"{url}/metrics").text
    assert sample(after, "accounts_rpc_errors_total", transport="rest", method=create,
                  code="INVALID_ARGUMENT") - sample(
        before, "accounts_rpc_errors_total", transport="rest", method=create,
        code="INVALID_ARGUMENT") == 1


def test_non_rpc_paths_are_counted(server: Server) -> None:
    httpx.get(f"{server.http_url}/no/such/path")
    text = httpx.get(f"{server.http_url}/metrics").text
    assert sample(text, "accounts_http_requests_total", path="<unmatched>", status="404") >= 1
    assert sample(text, "accounts_http_requests_total", path="/metrics", status="200") >= 1
    assert "/no/such/path" not in text  # no label per client-chosen path


# -- OpenAPI ------------------------------------------------------------------------------------


def test_openapi_is_served_valid_and_equal_to_the_committed_file(server: Server) -> None:
    r = httpx.get(f"{server.http_url}/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    committed = json.loads((ROOT / "openapi.json").read_text())
    assert committed == doc, "openapi.json is stale: run `make openapi`"
    assert (ROOT / "openapi.json").read_text() == openapi.render(), \
        "openapi.json is not formatted as `make openapi` writes it: run `make openapi`"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_every_documented_route_answers(server: Server) -> None:
    """Without a token: 401 for authenticated routes, an answer for public ones; never a
    routing miss (404/405) or a crash (500)."""
    doc = openapi.document()
    seen = 0
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        for path, item in doc["paths"].items():
            for method, op in item.items():
                kwargs: dict[str, Any] = {}
                if "requestBody" in op:
                    kwargs["json"] = {}
                r = c.request(method.upper(), _concrete(path), **kwargs)
                seen += 1
                assert r.status_code not in (404, 405, 500), \
                    f"{method.upper()} {path} ({op['operationId']}): {r.status_code} {r.text}"
                if op.get("security") != []:
                    assert r.status_code == 401, f"{method.upper()} {path}: {r.status_code}"
    assert seen >= 45


def test_every_documented_route_reaches_its_rpc(server: Server) -> None:
    """With the admin's token, each route reaches the RPC its operationId names (the
    pipeline sees the call), whatever the RPC then answers."""
    doc = openapi.document()
    seen: list[str] = []
    pipeline = server.app.pipeline
    original = pipeline.call

    def spy(method: str, *args: Any, **kw: Any) -> Any:
        if kw.get("observe_ok", True):  # not the admission a body route runs first
            seen.append(method)
        return original(method, *args, **kw)

    pipeline.call = spy  # type: ignore[method-assign]
    try:
        with httpx.Client(base_url=server.http_url, timeout=30, headers={
                "authorization": f"Bearer {server.admin_token}"}) as c:
            for path, item in doc["paths"].items():
                for method, op in item.items():
                    if op["tags"] in (["Operations"], ["OAuth2"]):  # no RPC behind them
                        continue
                    if op["operationId"] in ("AccountService_CloseAccount",):
                        continue  # would close an account named "x1" if it existed
                    seen.clear()
                    kwargs: dict[str, Any] = {"json": {}} if "requestBody" in op else {}
                    if op["operationId"] == "SessionService_CreateToken":
                        kwargs["json"] = {"client_id": server.admin_client_id,
                                          "client_secret": server.admin_client_secret}
                    r = c.request(method.upper(), _concrete(path), **kwargs)
                    service, rpc = op["operationId"].split("_")
                    rpc = rpc.rstrip("0123456789")
                    assert seen == [f"/accounts.v1.{service}/{rpc}"], \
                        f"{method.upper()} {path}: {r.status_code} {r.text}"
                    assert r.status_code != 500, f"{method.upper()} {path}: {r.text}"
    finally:
        del pipeline.call
