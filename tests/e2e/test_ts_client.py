"""A TypeScript client, made as its users make it: protoc-gen-es (from npm) generates it,
through buf (the committed buf.gen.yaml) or through protoc (the README's command), and
Connect's gRPC transport (@connectrpc/connect-node, HTTP/2 plaintext) calls
UserService.GetMe on a real server. Plain `node` runs it: the generated code is
JavaScript with .d.ts, so no TypeScript compiler is needed. Offline: node_modules is
installed by `make test`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from accounts.v1 import user_service_pb2

from tests.support import Server

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "node_modules" / ".bin"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not on the PATH")

# Prints the answer as JSON, or the Connect error code of a failed call.
GET_ME = """\
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "./accounts/v1/user_service_pb.js";

const client = createClient(UserService, createGrpcTransport({ baseUrl: process.env.BASE_URL }));
const token = process.env.TOKEN;
try {
  const me = await client.getMe({}, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  console.log(JSON.stringify({ userId: me.user?.id, accountId: me.account?.id }));
} catch (err) {
  console.log(JSON.stringify({ code: Code[ConnectError.from(err).code] }));
}
"""


def _run(args: list[str]) -> None:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout}{result.stderr}"


def _generate(generator: str, out: Path) -> Path:
    """The client as README, "Generating clients", makes it; returns its directory."""
    _run([sys.executable, "scripts/protogen.py", "deps"])  # build/proto-deps, as make does
    if generator == "buf":
        _run([str(BIN / "buf"), "generate", "--output", str(out)])
        return out / "build" / "clients" / "ts"
    files = sorted(
        p.relative_to(ROOT).as_posix()
        for root in ("protos", "build/proto-deps")
        for p in (ROOT / root).rglob("*.proto")
    )
    _run([
        sys.executable, "-m", "grpc_tools.protoc", "-I", "protos", "-I", "build/proto-deps",
        f"--plugin=protoc-gen-es={BIN / 'protoc-gen-es'}", f"--es_out={out}",
        "--es_opt=target=js+dts,import_extension=js", *files,
    ])
    return out


@pytest.fixture(scope="module", params=["buf", "protoc"])
def client_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory Node runs GET_ME in: the generated code as ES modules, node_modules."""
    client = _generate(str(request.param), tmp_path_factory.mktemp(f"ts-{request.param}"))
    (client / "package.json").write_text('{"type": "module"}\n')
    (client / "node_modules").symlink_to(ROOT / "node_modules")
    (client / "get_me.js").write_text(GET_ME)
    return client


def _get_me(client: Path, server: Server, token: str) -> dict[str, Any]:
    env = {**os.environ, "BASE_URL": f"http://{server.address}", "TOKEN": token}
    result = subprocess.run(
        [str(NODE), "get_me.js"], cwd=client, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_get_me_through_the_generated_client(server: Server, client_dir: Path) -> None:
    me = server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    assert me.user.id
    answer = _get_me(client_dir, server, server.admin_token)
    assert answer == {"userId": me.user.id, "accountId": me.account.id}


def test_get_me_without_a_token_is_unauthenticated(server: Server, client_dir: Path) -> None:
    assert _get_me(client_dir, server, "") == {"code": "Unauthenticated"}
