"""/healthz, /readyz and /metrics of the HTTP side, and the OpenAPI document."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from accounts.v1 import account_pb2, account_service_pb2, user_service_pb2
from google.protobuf import descriptor_pool
from openapi_spec_validator import validate

from accounts_grpc.rest import openapi
from tests.e2e.groups_helpers import create_account, uniq
from tests.support import Server, exposition_problems, sample

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


ME_GRPC = {"grpc_type": "unary", "grpc_service": "accounts.v1.UserService",
           "grpc_method": "GetMe"}
ME_REST = {"http_request_method": "GET", "http_route": "/v1/me",
           "grpc_service": "accounts.v1.UserService", "grpc_method": "GetMe"}


def test_metrics_cover_grpc_and_rest_calls_latencies_and_errors(server: Server) -> None:
    """gRPC calls under go-grpc-prometheus' names, REST requests under OpenTelemetry's
    HTTP names with the RPC they map to; each call counted once, under its transport."""
    url = server.http_url
    before = httpx.get(f"{url}/metrics").text
    server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    with pytest.raises(grpc.RpcError):
        server.stubs.users.GetMe(user_service_pb2.GetMeRequest())
    assert httpx.get(f"{url}/v1/me", headers={"authorization": f"Bearer {server.admin_token}"}
                     ).status_code == 200
    assert httpx.get(f"{url}/v1/me").status_code == 401
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = r.text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("grpc_server_started_total", **ME_GRPC) == 2
    assert delta("grpc_server_handled_total", **ME_GRPC, grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **ME_GRPC, grpc_code="Unauthenticated") == 1
    assert delta("grpc_server_msg_received_total", **ME_GRPC) == 2
    assert delta("grpc_server_msg_sent_total", **ME_GRPC) == 1  # the failed call sent none
    assert delta("grpc_server_handling_seconds_count", **ME_GRPC) == 2
    assert sample(after, "grpc_server_handling_seconds_bucket", **ME_GRPC, le="+Inf") >= 2
    duration = "http_server_request_duration_seconds"
    assert delta(f"{duration}_count", **ME_REST, http_response_status_code="200") == 1
    assert delta(f"{duration}_count", **ME_REST, http_response_status_code="401") == 1
    assert sample(after, f"{duration}_bucket", **ME_REST, http_response_status_code="401",
                  le="+Inf") >= 1
    assert "errors_total" not in after  # handled_total{grpc_code!="OK"} says it


def test_a_stream_is_one_call_with_a_message_sent_per_event(server: Server) -> None:
    """WatchEvents, a server stream: started and in flight while open, one message sent
    per event, handled (Canceled) once its client has gone."""
    watch = {"grpc_type": "server_stream", "grpc_service": "accounts.v1.AccountService",
             "grpc_method": "WatchEvents"}
    url = f"{server.http_url}/metrics"
    account_id, _ = create_account(server, uniq("m-"))
    cursor = server.stubs.accounts.ListAuditEvents(account_service_pb2.ListAuditEventsRequest(
        account_id=account_id, page_size=1), metadata=server.admin).next_cursor
    server.stubs.accounts.UpdateAccount(account_service_pb2.UpdateAccountRequest(
        account=account_pb2.Account(id=account_id, name=uniq("n-")),
        update_mask={"paths": ["name"]}), metadata=server.admin)
    before = httpx.get(url).text
    stream = server.stubs.accounts.WatchEvents(account_service_pb2.WatchEventsRequest(
        cursor=cursor, account_id=account_id), metadata=server.admin, timeout=30)
    assert next(stream).event.action == "account.update"
    during = httpx.get(url).text

    def delta(text: str, name: str, **labels: str) -> float:
        return sample(text, name, **watch, **labels) - sample(before, name, **watch, **labels)

    assert delta(during, "grpc_server_started_total") == 1
    assert delta(during, "grpc_server_msg_received_total") == 1
    assert delta(during, "grpc_server_msg_sent_total") >= 1  # one per event so far
    assert sample(during, "accounts_calls_in_flight", transport="grpc") == 1
    assert delta(during, "grpc_server_handling_seconds_count") == 0  # not ended yet
    stream.cancel()
    deadline = time.monotonic() + 20  # the server notices at the stream's next heartbeat
    while delta(after := httpx.get(url).text, "grpc_server_handled_total",
                grpc_code="Canceled") < 1:
        assert time.monotonic() < deadline, "the cancelled stream was never counted"
        time.sleep(0.2)
    assert delta(after, "grpc_server_handling_seconds_count") == 1
    assert sample(after, "accounts_calls_in_flight", transport="grpc") == 0


def test_transcoding_errors_count_as_errors_of_the_rpc(server: Server) -> None:
    url = server.http_url
    create = {"grpc_service": "accounts.v1.AccountService", "grpc_method": "CreateAccount",
              "http_request_method": "POST", "http_response_status_code": "400"}
    name = "http_server_request_duration_seconds_count"
    before = httpx.get(f"{url}/metrics").text
    r = httpx.post(f"{url}/v1/accounts", content=b"{", headers={
        "authorization": f"Bearer {server.admin_token}"})
    assert r.status_code == 400
    after = httpx.get(f"{url}/metrics").text
    assert sample(after, name, **create) - sample(before, name, **create) == 1


def test_non_rpc_paths_are_counted(server: Server) -> None:
    httpx.get(f"{server.http_url}/no/such/path")
    text = httpx.get(f"{server.http_url}/metrics").text
    name = "http_server_request_duration_seconds_count"
    assert sample(text, name, http_route="", http_response_status_code="404",
                  grpc_method="") >= 1
    assert sample(text, name, http_route="/metrics", http_response_status_code="200",
                  grpc_method="") >= 1
    assert "/no/such/path" not in text  # no label per client-chosen path


def test_metrics_series_are_distinct_with_process_in_flight_and_pool(server: Server) -> None:
    """One process: no series twice, no _created series (what promtool would flag), and
    the process collector, the in-flight gauges and the pool's gauges are there."""
    server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    text = httpx.get(f"{server.http_url}/metrics").text
    assert exposition_problems(text) == []
    assert sample(text, "process_cpu_seconds_total") > 0
    assert sample(text, "process_start_time_seconds") > 0
    assert sample(text, "process_resident_memory_bytes") > 0
    assert sample(text, "accounts_calls_in_flight", transport="grpc") == 0
    assert sample(text, "accounts_calls_in_flight", transport="rest") == 1  # this scrape
    assert sample(text, "accounts_db_pool_size") == server.app.settings.pool_size()
    # SQLite: each thread that read keeps its connection checked out; PostgreSQL: none now
    assert sample(text, "accounts_db_pool_checked_out") >= (server.backend == "sqlite")
    assert sample(text, "accounts_db_pool_waiting") == 0
    assert "\naccounts_db_pool_overflow " in text


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
    original, original_stream = pipeline.call, pipeline.stream

    def spy(method: str, *args: Any, **kw: Any) -> Any:
        if kw.get("observe_ok", True):  # not the admission a body route runs first
            seen.append(method)  # (nor a stream's own start: spy_stream has it)
        return original(method, *args, **kw)

    def spy_stream(method: str, *args: Any, **kw: Any) -> Any:
        seen.append(method)
        return original_stream(method, *args, **kw)

    pipeline.call = spy  # type: ignore[method-assign]
    pipeline.stream = spy_stream  # type: ignore[method-assign]
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
                    service, rpc = op["operationId"].split("_")
                    rpc = rpc.rstrip("0123456789")
                    if descriptor_pool.Default().FindServiceByName(
                            f"accounts.v1.{service}").methods_by_name[rpc].server_streaming:
                        with c.stream(method.upper(), _concrete(path), **kwargs) as r:
                            pass  # a stream that goes on: its head is enough
                    else:
                        r = c.request(method.upper(), _concrete(path), **kwargs)
                    assert seen == [f"/accounts.v1.{service}/{rpc}"], \
                        f"{method.upper()} {path}: {r.status_code} {r.text}"
                    assert r.status_code != 500, f"{method.upper()} {path}: {r.text}"
    finally:
        del pipeline.call, pipeline.stream
