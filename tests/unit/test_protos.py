"""The accounts.v1 protos: generated code is fresh, and every RPC of the API.md
contract exists with its access rule and REST route (buf lint, build and breaking are in
test_buf.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from accounts.v1 import (
    account_service_pb2,
    options_pb2,
    partition_service_pb2,
    session_service_pb2,
    user_group_service_pb2,
    user_service_pb2,
)
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOGEN = ROOT / "scripts" / "protogen.py"

# API.md's service table, exactly.
EXPECTED_RPCS = {
    "AccountService": [
        "CreateAccount",
        "GetAccount",
        "ListAccounts",
        "UpdateAccount",
        "CloseAccount",
        "ListAuditEvents",
        "WatchEvents",  # issue 15: the change feed (a server stream)
    ],
    "UserService": [
        "CreateUser",
        "GetUser",
        "ListUsers",
        "UpdateUser",
        "DeleteUser",
        "GetMe",
        "RotateClientSecret",
        "AddDevicePermissions",
        "RemoveDevicePermissions",
        "ListDevicePermissions",
        "AddChargingPermission",
        "RemoveChargingPermission",
        "UpsertUserOrder",
        "ListUserOrders",
        "CheckAccess",
        "ListAccessibleDevices",
    ],
    "UserGroupService": [
        "CreateUserGroup",
        "GetUserGroup",
        "ListUserGroups",
        "UpdateUserGroup",
        "DeleteUserGroup",
        "AddUserGroupMembers",
        "RemoveUserGroupMembers",
        "ListMyUserGroups",
    ],
    "PartitionService": [
        "CreatePartition",
        "GetPartition",
        "ListPartitions",
        "UpdatePartition",
        "DeletePartition",
        "RegisterDevices",
        "ListDevices",
    ],
    "SessionService": [
        "CreateToken",
        "CreateSession",
        "ListSessions",
        "RevokeSession",
        "IntrospectToken",
        "GetJwks",
        "ExchangeToken",  # issue 15: the subject token is its credential, so public
    ],
}

# API.md's required REST routes, exactly.
REQUIRED_ROUTES = {
    ("POST", "/v1/token"): "SessionService.CreateToken",
    ("GET", "/.well-known/jwks.json"): "SessionService.GetJwks",
    ("GET", "/v1/me"): "UserService.GetMe",
    ("GET", "/v1/me/usergroups"): "UserGroupService.ListMyUserGroups",
    ("POST", "/v1/accounts"): "AccountService.CreateAccount",
    ("GET", "/v1/accounts"): "AccountService.ListAccounts",
    ("GET", "/v1/accounts/{id}"): "AccountService.GetAccount",
    ("GET", "/v1/accounts:lookup"): "AccountService.GetAccount",
    ("PATCH", "/v1/accounts/{account.id}"): "AccountService.UpdateAccount",
    ("POST", "/v1/accounts/{id}:close"): "AccountService.CloseAccount",
    ("GET", "/v1/accounts/{account_id}/auditlog"): "AccountService.ListAuditEvents",
    ("GET", "/v1/accounts/{account_id}/partitions"): "PartitionService.ListPartitions",
    ("POST", "/v1/sessions"): "SessionService.CreateSession",
    ("DELETE", "/v1/sessions/{id}"): "SessionService.RevokeSession",
}

PUBLIC_RPCS = {"SessionService.CreateToken", "SessionService.GetJwks",
               "SessionService.ExchangeToken"}
KNOWN_ROLES = {"admin", "admin-reader", "account-admin", "consultant", "member"}

SERVICE_MODULES = [
    account_service_pb2,
    user_service_pb2,
    user_group_service_pb2,
    partition_service_pb2,
    session_service_pb2,
]


def _services():
    for module in SERVICE_MODULES:
        yield from module.DESCRIPTOR.services_by_name.values()


def _methods():
    for service in _services():
        for method in service.methods:
            yield service, method


def _options(method) -> descriptor_pb2.MethodOptions:
    # Re-parse the serialized options so extensions resolve through the
    # generated modules imported above (works for the upb and python backends).
    options = descriptor_pb2.MethodOptions()
    options.ParseFromString(method.GetOptions().SerializeToString())
    return options


def _bindings(rule):
    yield rule
    for extra in rule.additional_bindings:
        yield from _bindings(extra)


def _routes(method):
    for rule in _bindings(_options(method).Extensions[annotations_pb2.http]):
        kind = rule.WhichOneof("pattern")
        yield kind.upper(), getattr(rule, kind), rule.body


def _run_protogen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROTOGEN), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generated_code_is_fresh():
    result = _run_protogen("check")
    assert result.returncode == 0, (
        "gen/ does not match protos/; run `make gen`\n" + result.stdout + result.stderr
    )


def test_services_have_exactly_the_contract_rpcs():
    services = {s.name: [m.name for m in s.methods] for s in _services()}
    assert services.keys() == EXPECTED_RPCS.keys()
    for name, rpcs in EXPECTED_RPCS.items():
        assert sorted(services[name]) == sorted(rpcs), name
        assert all(s.full_name.startswith("accounts.v1.") for s in _services())


def test_every_rpc_has_an_access_rule():
    missing, bad = [], []
    for service, method in _methods():
        options = _options(method)
        label = f"{service.name}.{method.name}"
        if not options.HasExtension(options_pb2.access):
            missing.append(label)
            continue
        rule = options.Extensions[options_pb2.access]
        if label in PUBLIC_RPCS:
            if not rule.public or rule.roles:
                bad.append(f"{label}: must be public with no roles")
        elif rule.public or not rule.roles or not set(rule.roles) <= KNOWN_ROLES:
            bad.append(f"{label}: public={rule.public} roles={list(rule.roles)}")
    assert not missing, f"RPCs without (accounts.v1.access): {missing}"
    assert not bad, bad


def test_every_service_is_served_once_with_its_generated_registration():
    """registry.SERVICERS, the server's one list, serves each service exactly once,
    and each entry finds its name and `add_<Service>Servicer_to_server` by itself."""
    from accounts_grpc.rpc import registry

    bindings = [registry.grpc_binding(servicer) for servicer in registry.SERVICERS]
    names = [name for name, _add in bindings]
    assert sorted(names) == sorted(s.full_name for s in _services())
    for name, add in bindings:
        assert add.__name__ == f"add_{name.rsplit('.', 1)[1]}Servicer_to_server"
        assert add.__module__ == f"accounts.v1.{_module_of(name)}_pb2_grpc"
    with pytest.raises(TypeError, match="generated"):
        registry.grpc_binding(object)


def _module_of(service_full_name: str) -> str:
    service = next(s for s in _services() if s.full_name == service_full_name)
    return service.file.name.rsplit("/", 1)[1].removesuffix(".proto")


def test_every_rpc_has_an_http_route():
    missing = [
        f"{s.name}.{m.name}"
        for s, m in _methods()
        if not _options(m).HasExtension(annotations_pb2.http)
    ]
    assert not missing, f"RPCs without (google.api.http): {missing}"


def test_required_rest_routes():
    routes = {}
    for service, method in _methods():
        for verb, path, _body in _routes(method):
            key = (verb, path)
            assert key not in routes, f"route {key} bound twice"
            routes[key] = f"{service.name}.{method.name}"
    for key, rpc in REQUIRED_ROUTES.items():
        assert routes.get(key) == rpc, f"{key} should route to {rpc}, got {routes.get(key)}"


def test_rpcs_use_unique_standard_request_response_messages():
    seen = set()
    for _service, method in _methods():
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"
        assert method.input_type.full_name not in seen
        seen.add(method.input_type.full_name)


def test_list_rpcs_page_the_same_way():
    for _service, method in _methods():
        if not method.name.startswith("List"):
            continue
        request = method.input_type.fields_by_name
        response = method.output_type.fields_by_name
        assert request["page_size"].type == request["page_size"].TYPE_INT32, method.name
        assert "page_token" in request, method.name
        for name in ("next_page_token", "previous_page_token"):
            assert name in response, (method.name, name)
        assert response["total_size"].type == response["total_size"].TYPE_INT32, method.name


def test_token_response_is_oauth2_shaped():
    fields = session_service_pb2.CreateTokenResponse.DESCRIPTOR.fields_by_name
    assert fields["expires_in"].type == fields["expires_in"].TYPE_INT32
    assert {f.json_name for f in fields.values()} == {
        "access_token",
        "token_type",
        "expires_in",
        "scope",
    }


def test_output_only_fields_are_marked():
    from accounts.v1 import account_pb2

    def behaviors(field):
        options = descriptor_pb2.FieldOptions()
        options.ParseFromString(field.GetOptions().SerializeToString())
        return set(options.Extensions[field_behavior_pb2.field_behavior])

    fields = account_pb2.Account.DESCRIPTOR.fields_by_name
    for name in ("id", "closed", "create_time", "update_time", "activity_time"):
        assert field_behavior_pb2.OUTPUT_ONLY in behaviors(fields[name]), name
