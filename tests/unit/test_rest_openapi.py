"""The OpenAPI document and the proto comments it is built from (no server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from accounts_grpc.rest import openapi

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_json_is_current_and_valid() -> None:
    doc = openapi.document()
    validate(doc)
    committed = (ROOT / "openapi.json").read_text()
    assert json.loads(committed) == doc, "openapi.json is stale: run `make openapi`"
    assert committed == openapi.render(), "openapi.json differs in format: run `make openapi`"


def test_openapi_command_prints_the_document() -> None:
    out = subprocess.run([sys.executable, "-m", "accounts_grpc.rest.openapi"], cwd=ROOT,
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


def test_descriptors_binpb_matches_the_protos() -> None:
    """The comments file is what `--write-descriptors` makes from protos/ now."""
    pytest.importorskip("grpc_tools")
    fresh = openapi.build_descriptors(ROOT / "protos")
    assert fresh == openapi.DESCRIPTORS.read_bytes(), \
        "src/accounts_grpc/rest/descriptors.binpb is stale: run `make gen`"
