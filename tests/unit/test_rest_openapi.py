"""The OpenAPI document and the proto comments it is built from (no server)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from accounts_grpc.rest import openapi

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
                 "GetAccountRequest", "CreateTokenResponse", "Status", "UserKind"):
        assert name in schemas, name
    assert schemas["Account"]["description"].startswith("An Account is")
    assert schemas["Account"]["properties"]["createTime"]["readOnly"] is True
    assert schemas["Account"]["properties"]["createTime"]["format"] == "date-time"
    assert schemas["UserKind"]["enum"][0] == "USER_KIND_UNSPECIFIED"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    get = doc["paths"]["/v1/accounts/{id}"]["get"]
    assert get["operationId"] == "AccountService_GetAccount"
    assert get["description"].startswith("Gets an account")
    assert get["responses"]["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Status"}
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
