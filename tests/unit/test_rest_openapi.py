"""The OpenAPI document and the proto comments it is built from (no server)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from accounts_grpc.rest import errors, openapi

ROOT = Path(__file__).resolve().parents[2]
OPENAPIGEN = ROOT / "scripts" / "openapigen.py"


def test_committed_openapi_json_is_current_and_valid() -> None:
    doc = openapi.document()
    validate(doc)
    committed = (ROOT / "openapi.json").read_text()
    assert json.loads(committed) == doc, "openapi.json is stale: run `make openapi`"
    assert committed == openapi.render(), "openapi.json differs in format: run `make openapi`"


def test_openapi_command_prints_the_document() -> None:
    out = subprocess.run([sys.executable, str(OPENAPIGEN), "openapi", "--stdout"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout == openapi.render()


def test_openapi_has_comments_schemas_and_security() -> None:
    assert openapi.stale_files() == [], "descriptors.binpb is stale: run `make gen`"
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    for name in ("Account", "User", "UserGroup", "Partition", "Session", "Jwk", "AuditEvent",
                 "CreateAccountRequest", "CreateTokenResponse", "Status", "UserKind"):
        assert name in schemas, name
    assert schemas["Account"]["description"].startswith("An Account is")
    assert schemas["Account"]["properties"]["createTime"]["readOnly"] is True
    assert schemas["Account"]["properties"]["createTime"]["format"] == "date-time"
    assert schemas["UserKind"]["enum"][0] == "USER_KIND_UNSPECIFIED"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    get = doc["paths"]["/v1/accounts/{id}"]["get"]
    assert get["operationId"] == "AccountService_GetAccount"
    assert get["description"].startswith("Gets an account")
    assert get["responses"]["default"] == {"$ref": "#/components/responses/Error"}
    assert doc["components"]["responses"]["Error"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/Status"}
    assert doc["paths"]["/v1/token"]["post"]["security"] == []
    assert doc["paths"]["/.well-known/jwks.json"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/v1/me"]["get"]  # the global bearer applies
    patch = doc["paths"]["/v1/accounts/{id}"]["patch"]
    assert patch["operationId"] == "AccountService_UpdateAccount"
    assert "updateMask" in [p["name"] for p in patch["parameters"]]
    parts = doc["paths"]["/v1/accounts/{account_id}/partitions"]["get"]
    include = next(p for p in parts["parameters"] if p["name"] == "include")
    assert include["schema"]["type"] == "array"
    assert "application/x-www-form-urlencoded" in \
        doc["paths"]["/v1/token"]["post"]["requestBody"]["content"]


def test_descriptors_binpb_and_openapi_json_match_the_protos() -> None:
    """The comments file is what `openapigen.py descriptors` makes from protos/ now, and
    openapi.json what `openapigen.py openapi` writes (`make check-gen` runs this check)."""
    pytest.importorskip("grpc_tools")
    out = subprocess.run([sys.executable, str(OPENAPIGEN), "check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_path_parameters_are_flat_and_match_their_templates() -> None:
    """OpenAPI tools reject or skip dotted path parameters (schemathesis, client
    generators), so each is named flat and says which request field it fills; every
    ``{name}`` of a path template is a path parameter of each of its operations."""
    doc = openapi.document()
    dotted_fields = 0
    for path, item in doc["paths"].items():
        in_template = re.findall(r"\{([^}]*)\}", path)
        assert len(in_template) == len(set(in_template)), path
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            names = [p["name"] for p in op.get("parameters", ()) if p["in"] == "path"]
            assert sorted(names) == sorted(in_template), where
            assert len(names) == len(set(names)), where
            for p in op.get("parameters", ()):
                if p["in"] == "path":
                    assert "." not in p["name"], f"{where}: dotted path parameter {p['name']}"
                    assert p["required"] is True, where
                    fills = re.search(r"Fills the request field `([a-z_.]+)`",
                                      p.get("description", ""))
                    if fills and "." in fills.group(1):
                        dotted_fields += 1
    assert dotted_fields >= 16  # the UserRef routes: user.user_id, user.account_id, ...
    orders = doc["paths"]["/v1/accounts/{account_id}/externalUsers/{external_id}/orders"]["get"]
    account, external = orders["parameters"][:2]
    assert account["name"] == "account_id"
    assert account["description"].startswith("Fills the request field `user.account_id`.")
    assert external["description"].startswith("Fills the request field `user.external_id`.")
    perms = doc["paths"]["/v1/users/{user_id}/devicePermissions"]["get"]["parameters"][0]
    assert perms["name"] == "user_id"
    assert "`user.user_id`" in perms["description"]
    patch = doc["paths"]["/v1/accounts/{id}"]["patch"]["parameters"][0]
    assert patch["description"].startswith("Fills the request field `account.id`.")
    assert "/v1/users/{user.user_id}/sessions" not in doc["paths"]  # URL shape unchanged
    assert "/v1/users/{user_id}/sessions" in doc["paths"]


@pytest.mark.parametrize(("paths", "taken", "expected"), [
    (["id"], [], ["id"]),
    (["user.user_id"], [], ["user_id"]),
    (["user.account_id", "user.external_id"], [], ["account_id", "external_id"]),
    # the last part collides with another path variable: underscores for both
    (["a.id", "b.id"], [], ["a_id", "b_id"]),
    # ... or with a query parameter, compared as client generators fold names
    (["user.account_id"], ["accountId"], ["user_account_id"]),
    (["user.account_id"], ["user.accountId"], ["account_id"]),
    # the underscored name is taken too: a suffix keeps it unique
    (["a.b_c", "a_b.c"], ["c"], ["b_c", "a_b_c"]),
    (["a_b.c", "a.b_c"], ["c", "b_c"], ["a_b_c", "a_b_c_2"]),
])
def test_flat_param_names(paths: list[str], taken: list[str], expected: list[str]) -> None:
    assert openapi.flat_param_names(paths, taken) == expected


def test_update_bodies_are_partial_resources() -> None:
    """An AIP-134 update takes the fields it writes: its body requires none of them (an
    empty PATCH is a valid no-op), while the create body still requires them."""
    doc = openapi.document()
    patches = {path: item["patch"] for path, item in doc["paths"].items() if "patch" in item}
    assert len(patches) >= 4
    for path, op in patches.items():
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert "required" not in body and body["type"] == "object", path
        assert body["properties"], path
        assert "updateMask" in [p["name"] for p in op["parameters"]], path
    account = doc["paths"]["/v1/accounts/{id}"]["patch"]["requestBody"]["content"]
    assert "partial resource" in account["application/json"]["schema"]["description"]
    assert doc["components"]["schemas"]["Account"]["required"] == ["name", "email"]


def test_page_sizes_are_non_negative() -> None:
    doc = openapi.document()
    sizes = [p for item in doc["paths"].values() for op in item.values()
             for p in op.get("parameters", ()) if p["name"] == "pageSize"]
    assert len(sizes) >= 10
    assert all(p["schema"]["minimum"] == 0 for p in sizes)


def _refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in a part of the document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_no_unused_components() -> None:
    """Every schema and response in components is reached from some operation, directly
    or through other components (redocly's no-unused-components, which counts a schema
    used by an unused one as used; this walk does not)."""
    doc = openapi.document()
    components = doc["components"]
    reached: set[str] = set()
    todo = list(_refs(doc["paths"]))
    while todo:
        ref = todo.pop()
        if ref in reached:
            continue
        reached.add(ref)
        _, _, kind, name = ref.split("/")
        todo.extend(_refs(components[kind][name]))
    for kind in ("schemas", "responses"):
        defined = {f"#/components/{kind}/{name}" for name in components[kind]}
        assert defined - reached == set(), f"unused {kind}"
        assert {r for r in reached if r.startswith(f"#/components/{kind}/")} <= defined


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def _body_schema(doc: dict[str, Any], response: dict[str, Any]) -> str:
    """The name of the schema of an error response's JSON body."""
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return str(response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1])


# What the shim can answer besides grpc-gateway's table: a late body (408), a large body
# (413), a large head (431), the wrong method (405, a path's, not an operation's).
SHIM_STATUSES = {408, 413, 431}
OAUTH_OPERATIONS = {"POST /v1/token", "POST /oauth2/introspect", "POST /oauth2/revoke"}


def test_every_operation_describes_its_errors() -> None:
    """Each operation lists the 4xx and 5xx statuses it can answer and a ``default``, each
    a shared response of components/responses: a Status for the transcoded RPCs, an RFC
    6749 error for the OAuth 2 endpoints (431, refused with the head before any route, is
    a Status everywhere); only statuses the shim can answer at all."""
    doc = openapi.document()
    possible = {str(s) for s in (*errors.HTTP_STATUS.values(), *SHIM_STATUSES) if s >= 400}
    rpc_tags = {t["name"] for t in doc["tags"]} - {"Operations", "OAuth2"}
    statuses: dict[str, set[str]] = {}
    for where, op in _operations(doc):
        responses = op["responses"]
        failures = {s for s in responses if s == "default" or int(s) >= 400}
        assert "default" in failures, where
        assert any(s.startswith("4") for s in failures), f"{where}: no 4xx"
        assert failures - {"default"} <= possible, where
        statuses[where] = failures - {"default"}
        for status in failures:
            if where == "GET /readyz" and status == "503":
                assert _body_schema(doc, responses[status]) == "Readiness"
                continue
            assert set(responses[status]) == {"$ref"}, f"{where} {status}: inline"
            expected = ("OAuth2Error" if where in OAUTH_OPERATIONS and status != "431"
                        else "Status")
            assert _body_schema(doc, responses[status]) == expected, f"{where} {status}"
        if op["tags"][0] in rpc_tags and where not in OAUTH_OPERATIONS:
            assert {"400", "431", "503"} <= statuses[where], where
            assert ("401" in statuses[where]) == (op.get("security") != []), where
            assert ({"408", "413"} <= statuses[where]) == ("requestBody" in op), where
            assert "429" not in statuses[where], f"{where}: only client auth is rate limited"
    assert all("412" not in s for s in statuses.values())  # FAILED_PRECONDITION is 400
    assert statuses["GET /v1/me"] == {"400", "401", "431", "503"}
    assert statuses["GET /.well-known/jwks.json"] == {"400", "431", "503"}
    assert statuses["POST /v1/accounts/{account_id}/userGroups"] == {
        "400", "401", "403", "404", "408", "409", "413", "431", "503"}
    assert statuses["PATCH /v1/accounts/{id}"] >= {"403", "404", "409"}
    assert statuses["GET /v1/accounts/{id}"] == {"400", "401", "404", "431", "503"}
    assert "404" in statuses["GET /v1/accounts:lookup"]  # by email
    assert {"403", "404"} <= statuses["POST /v1/sessions"]  # the user is in the body
    assert {"403", "404"} <= statuses["GET /v1/users/{user_id}/sessions"]
    assert "409" not in statuses["DELETE /v1/sessions/{id}"]
    assert "403" not in statuses["POST /v1/token:introspect"]
    assert "403" in statuses["GET /v1/accounts/{account_id}/auditlog"]  # a role
    assert statuses["POST /v1/token"] == {"400", "401", "413", "429", "431", "503"}
    assert statuses["POST /oauth2/revoke"] == {"400", "401", "408", "413", "429", "431", "503"}
    assert statuses["GET /healthz"] == {"431"}
    assert statuses["GET /readyz"] == {"431", "503"}
    shared = doc["components"]["responses"]
    assert shared["Unauthenticated"]["headers"]["WWW-Authenticate"]["required"] is True
    assert shared["OAuth2TooManyAttempts"]["headers"]["Retry-After"]["required"] is True
    enum = doc["components"]["schemas"]["OAuth2Error"]["properties"]["error"]["enum"]
    assert "unsupported_token_type" in enum  # RFC 7009, from /oauth2/revoke
