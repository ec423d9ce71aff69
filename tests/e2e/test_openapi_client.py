"""A Python client generated from the committed openapi.json takes every route and works.

openapi-python-client (the generator most Python users reach for) builds the client
offline, without its ruff post-hooks, into a temporary package. It must not skip an
operation (it skips one it cannot read, with a warning such as "Incorrect path
templating" for a dotted path parameter): one endpoint module per operation, each for
the method and path the document gives. Then the client calls a real server on each
database backend with the bootstrap admin's bearer token: GET and POST routes, routes
whose flat path parameter fills a dotted request field (``user_id`` is
``user.user_id``), and documented errors parsed as the Status model.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import Server

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "accounts_rest_client"
#: what the generated code says of each endpoint: its method and its path template
ENDPOINT = re.compile(r'"method": "(\w+)",\s*"url": "([^"]+)"')


@dataclass(frozen=True)
class Generated:
    output: str  # what the generator printed
    package: Path

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.{name}")

    def endpoint(self, tag: str, operation: str) -> ModuleType:
        return self.module(f"api.{tag}.{operation}")

    def models(self) -> Any:
        return self.module("models")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """The client, generated once per module and importable as ``accounts_rest_client``."""
    out = tmp_path_factory.mktemp("openapi-client")
    config = out / "config.yaml"
    # no ruff run over the generated code; a server stream's lines (WatchEvents) are JSON
    config.write_text("post_hooks: []\ncontent_type_overrides:\n"
                      "  application/x-ndjson: application/json\n")
    run = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(ROOT / "openapi.json"),
         "--output-path", str(out / PACKAGE), "--meta", "none", "--config", str(config)],
        cwd=out, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(out))
    try:
        yield Generated(run.stdout + run.stderr, out / PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_the_generator_takes_every_route(generated: Generated) -> None:
    assert "Warning" not in generated.output, generated.output
    assert "Incorrect path templating" not in generated.output, generated.output
    document = json.loads((ROOT / "openapi.json").read_text())
    operations = [(method.upper(), path) for path, item in document["paths"].items()
                  for method in item]
    endpoints = []
    for module in sorted((generated.package / "api").glob("*/*.py")):
        if module.name != "__init__.py":
            found = ENDPOINT.findall(module.read_text())
            assert len(found) == 1, f"{module}: {found}"
            endpoints.append((found[0][0].upper(), found[0][1]))
    assert sorted(endpoints) == sorted(operations)


@pytest.fixture(scope="module")
def client(generated: Generated, server: Server) -> Iterator[Any]:
    """The generated AuthenticatedClient for the bootstrap admin of the module's server."""
    authenticated = generated.module("client").AuthenticatedClient
    with authenticated(base_url=server.http_url, token=server.admin_token, timeout=30.0,
                       raise_on_unexpected_status=True) as c:
        yield c


def _ok(response: Any) -> Any:
    assert response.status_code == 200, f"{response.status_code}: {response.content[:500]!r}"
    return response.parsed


def _create_account(generated: Generated, client: Any) -> Any:
    m = generated.models()
    name = f"Client-{uuid.uuid4().hex[:8]}"
    body = m.CreateAccountRequest(
        account=m.Account(name=name, email=f"{name.lower()}@example.com"),
        first_user=m.User(kind=m.UserKind.USER_KIND_HUMAN, email=f"ada.{name.lower()}@example.com",
                          first_name="Ada", last_name="Lovelace"))
    created = _ok(generated.endpoint("account_service", "account_service_create_account")
                  .sync_detailed(client=client, body=body))
    assert isinstance(created, m.CreateAccountResponse)
    assert created.account.name == name
    return created


def test_get_and_post_routes(generated: Generated, client: Any, server: Server) -> None:
    m = generated.models()
    me = _ok(generated.endpoint("user_service", "user_service_get_me").sync_detailed(
        client=client))
    assert isinstance(me, m.GetMeResponse)
    assert "admin" in me.user.roles
    created = _create_account(generated, client)
    assert created.first_user.roles == ["account-admin"]
    get_account = generated.endpoint("account_service", "account_service_get_account")
    got = _ok(get_account.sync_detailed(created.account.id, client=client))
    assert (got.account.id, got.account.name, got.account.closed) == (
        created.account.id, created.account.name, False)
    group = _ok(generated.endpoint("user_group_service", "user_group_service_create_user_group")
                .sync_detailed(created.account.id, client=client,
                               body=m.UserGroup(name="Operators", roles=["member"])))
    assert isinstance(group, m.CreateUserGroupResponse)
    assert (group.user_group.account_id, group.user_group.name) == (
        created.account.id, "Operators")

    # documented errors come back as the Status model
    missing = get_account.sync_detailed(str(uuid.uuid4()), client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, m.Status)
    assert missing.parsed.code == 5 and missing.parsed.details
    anonymous = generated.module("client").Client(base_url=server.http_url, timeout=30.0)
    refused = generated.endpoint("user_service", "user_service_get_me").sync_detailed(
        client=anonymous)
    assert refused.status_code == 401 and isinstance(refused.parsed, m.Status)
    assert refused.parsed.code == 16


def test_flat_path_parameters_fill_dotted_fields(generated: Generated, client: Any) -> None:
    """``/v1/users/{user_id}/sessions`` and ``.../devicePermissions`` fill the request
    field ``user.user_id``: the client sends the flat name, the server reads the user."""
    m = generated.models()
    user_id = _create_account(generated, client).first_user.id
    session = _ok(generated.endpoint("session_service", "session_service_create_session")
                  .sync_detailed(client=client,
                                 body=m.CreateSessionRequest(user=m.UserRef(user_id=user_id))))
    assert session.session.user_id == user_id and session.access_token
    by_user = generated.endpoint("session_service", "session_service_list_sessions_2")
    listed = _ok(by_user.sync_detailed(user_id, client=client))
    assert [s.id for s in listed.sessions] == [session.session.id]
    permissions = _ok(generated.endpoint("user_service", "user_service_list_device_permissions")
                      .sync_detailed(user_id, client=client))
    assert permissions.permissions == []
    stranger = by_user.sync_detailed(str(uuid.uuid4()), client=client)
    assert stranger.status_code == 404 and isinstance(stranger.parsed, m.Status)
    assert stranger.parsed.code == 5


def test_errors_come_as_documented(generated: Generated, client: Any, server: Server) -> None:
    """The less obvious statuses the document lists are real, in the shape it gives: a
    request head too large for any operation (431, even a health probe's), a body too
    large (413), an unknown query parameter on a route that takes none (400)."""
    m = generated.models()
    healthz = generated.endpoint("operations", "operations_healthz")
    assert _ok(healthz.sync_detailed(client=client)) == "ok\n"
    padded = generated.module("client").Client(  # with_headers would change `client` too
        base_url=server.http_url, timeout=30.0, headers={"x-padding": "a" * 20000})
    refused = healthz.sync_detailed(client=padded)
    assert refused.status_code == 431 and isinstance(refused.parsed, m.Status)
    assert refused.parsed.code == 8
    group = m.UserGroup(name="a" * (1 << 20))  # past the 1 MiB default
    too_large = generated.endpoint("user_group_service", "user_group_service_create_user_group") \
        .sync_detailed(str(uuid.uuid4()), client=client, body=group)
    assert too_large.status_code == 413 and isinstance(too_large.parsed, m.Status)
    assert too_large.parsed.code == 8
    # the client sends no parameter the document does not list: its HTTP client does
    unknown = client.get_httpx_client().get("/.well-known/jwks.json", params={"color": "red"})
    jwks = generated.endpoint("session_service", "session_service_get_jwks")
    parsed = jwks._parse_response(client=client, response=unknown)  # as the client reads it
    assert unknown.status_code == 400 and isinstance(parsed, m.Status) and parsed.code == 3
