"""The `accounts-grpc` command, run as a real process: bootstrap, keys, settings, each
command's flags, and `make serve` (tests/e2e/test_cli_errors.py: the failures to start)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import session_service_pb2_grpc, user_service_pb2, user_service_pb2_grpc

from accounts_grpc.config import Settings
from tests import support
from tests.serving import LoggedProcess

CLI = [sys.executable, "-m", "accounts_grpc.cli"]


def run(*args: str, env: dict[str, str] | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACCOUNTS_")}
    base.update(env or {})
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, env=base, timeout=120,
                       check=False)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def db_flags(tmp: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{tmp / 'accounts.db'}",
            "--key-encryption-key-file", str(tmp / "test.kek")]


@contextmanager
def app_on(tmp: Path) -> Iterator[grpc.Channel]:
    """The server, on the database the commands wrote (same key-encryption key)."""
    from accounts_grpc.app import App

    app = App(support.test_settings(f"sqlite:///{tmp / 'accounts.db'}", tmp))
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            yield channel
    finally:
        app.stop(grace=1.0)


def token(channel: grpc.Channel, creds: dict[str, str]) -> str:
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    return str(stub.CreateToken(spb.CreateTokenRequest(
        client_id=creds["client_id"], client_secret=creds["client_secret"]), timeout=10
    ).access_token)


def test_bootstrap_json_twice_both_users_work(tmp_path: Path) -> None:
    first = run("bootstrap", "--json", *db_flags(tmp_path))
    second = run("bootstrap", "--json", *db_flags(tmp_path))
    one, two = json.loads(first.stdout), json.loads(second.stdout)  # one JSON object each
    assert set(one) == {"account_id", "user_id", "client_id", "client_secret"}
    assert one["account_id"] == two["account_id"], "one platform account"
    assert one["client_id"] != two["client_id"] and one["user_id"] != two["user_id"]
    assert one["client_secret"] not in first.stderr, "the secret goes to stdout only"
    with app_on(tmp_path) as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        for creds in (one, two):
            me = users.GetMe(user_service_pb2.GetMeRequest(),
                             metadata=support.bearer(token(channel, creds)), timeout=10)
            assert me.user.id == creds["user_id"] and "admin" in me.user.roles


def test_bootstrap_text(tmp_path: Path) -> None:
    out = run("bootstrap", *db_flags(tmp_path)).stdout
    assert "client_id:" in out and "client_secret:" in out and "shown once" in out


def test_keys_rotate_and_list(tmp_path: Path) -> None:
    flags = db_flags(tmp_path)
    [only] = json.loads(run("keys", "list", "--json", *flags).stdout)
    assert only["current"] and only["alg"] == "ES256" and only["expire_time"] is None
    creds = json.loads(run("bootstrap", "--json", *flags).stdout)
    with app_on(tmp_path) as channel:
        old_token = token(channel, creds)

    # the new key is published now and signs later (tests/e2e/test_key_rotation.py)
    rotated = json.loads(run("keys", "rotate", "--json", *flags).stdout)
    assert rotated["kid"] != only["kid"] and rotated["phase"] == "pending"
    listed = json.loads(run("keys", "list", "--json", *flags).stdout)
    assert [k["kid"] for k in listed] == [rotated["kid"], only["kid"]], "newest first"
    old = listed[1]
    assert old["current"] and old["retire_time"] == rotated["activate_time"]
    assert old["expire_time"]
    text = run("keys", "list", *flags).stdout
    assert only["kid"] in text and "pending" in text and "active" in text

    with app_on(tmp_path) as channel:  # a server started after the rotation
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        kids = [k.kid for k in stub.GetJwks(spb.GetJwksRequest(), timeout=10).keys]
        assert kids == [rotated["kid"], only["kid"]]
        new_token = token(channel, creds)
        assert jwt.get_unverified_header(new_token)["kid"] == only["kid"], "until activation"
        users = user_service_pb2_grpc.UserServiceStub(channel)
        for t in (old_token, new_token):
            users.GetMe(user_service_pb2.GetMeRequest(), metadata=support.bearer(t), timeout=10)


def test_settings_come_from_accounts_variables(tmp_path: Path) -> None:
    env = {
        "ACCOUNTS_DATABASE_URL": f"sqlite:///{tmp_path / 'accounts.db'}",
        "ACCOUNTS_KEY_ENCRYPTION_KEY_FILE": str(tmp_path / "env.kek"),
        "ACCOUNTS_SIGNING_ALG": "ES256",
    }
    [key] = json.loads(run("keys", "list", "--json", env=env).stdout)
    assert key["alg"] == "ES256"
    assert (tmp_path / "env.kek").exists() and (tmp_path / "accounts.db").exists()
    # a flag wins over its variable
    rotated = json.loads(run("keys", "rotate", "--json", "--signing-alg", "RS256",
                             env=env).stdout)
    assert rotated["alg"] == "RS256"


def test_a_wrong_key_encryption_key_is_a_clear_error(tmp_path: Path) -> None:
    run("keys", "list", *db_flags(tmp_path))
    p = run("keys", "list", "--database-url", f"sqlite:///{tmp_path / 'accounts.db'}",
            "--key-encryption-key-file", str(tmp_path / "another.kek"), check=False)
    assert p.returncode != 0
    assert "key-encryption key" in p.stderr and "Traceback" not in p.stderr


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    p = run("serve", *db_flags(tmp_path), "--grpc-workers", "0", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "grpc_workers (ACCOUNTS_GRPC_WORKERS) must be at least 1" in p.stderr
    p = run("serve", *db_flags(tmp_path), env={"ACCOUNTS_GRPC_PORT": "many"}, check=False)
    assert p.returncode != 0 and "grpc_port" in p.stderr and "Traceback" not in p.stderr


def test_migrate_on_sqlite(tmp_path: Path) -> None:
    first = run("migrate", *db_flags(tmp_path)).stdout
    assert first.startswith("schema: empty -> ")
    head = first.split("-> ")[1].strip()
    assert run("migrate", *db_flags(tmp_path)).stdout.strip() == f"schema: {head} -> {head}"


def help_flags(*command: str) -> set[str]:
    """The flags ``--help`` lists (its option lines, not the flags their help names)."""
    flags: set[str] = set()
    for line in run(*command, "--help").stdout.splitlines():
        if line.startswith("  -"):
            invocation = re.split(r"\s{2,}", line.strip())[0]
            flags.update(re.findall(r"--[a-z][a-z-]+", invocation))
    return flags - {"--help", "--json"}


def test_each_command_lists_only_the_flags_it_uses(tmp_path: Path) -> None:
    every = {Settings.flag(f.name) for f in dataclasses.fields(Settings)}
    negated = {"--no-" + Settings.flag(f.name)[2:] for f in dataclasses.fields(Settings)
               if f.type in (bool, "bool")}  # --no-log-json, ...
    assert help_flags("serve") == every | negated | {"--print-bootstrap",
                                                     "--no-print-bootstrap"}
    assert help_flags("migrate") == {"--database-url", "--log-level", "--log-json",
                                     "--no-log-json"}
    kek = {"--key-encryption-key", "--key-encryption-key-file"}
    assert help_flags("bootstrap") == help_flags("migrate") | kek | {"--signing-alg"}
    for action in ("rotate", "list"):
        assert help_flags("keys", action) == help_flags("bootstrap") | {
            "--key-cache-seconds", "--jwks-max-age"}
    # the flags migrate and bootstrap took before are still accepted (a script may pass
    # one set to every command; test_migrate_on_sqlite passes the key's file)
    run("migrate", *db_flags(tmp_path), "--token-lifetime", "60", "--signing-alg", "RS256")
    run("bootstrap", *db_flags(tmp_path), "--token-lifetime", "60")


# -- make serve ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_serve(*args: str, env: dict[str, str], dry_run: bool = False,
               **popen: Any) -> subprocess.Popen[str]:
    """`make serve` in the repository, with this interpreter and without reinstalling."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ACCOUNTS_", "MAKE", "MFLAGS"))
            and k not in ("GRPC_PORT", "HTTP_PORT", "PROMETHEUS_MULTIPROC_DIR")}
    command = ["make", "--no-print-directory", "-o", ".venv/.installed",
               f"PY={sys.executable}", *(["-n"] if dry_run else []), "serve", *args]
    return subprocess.Popen(command, cwd=ROOT, env=base | env, text=True, **popen)


@needs_make
def test_make_serve_passes_ports_only_when_given() -> None:
    def command(*args: str, env: dict[str, str]) -> str:
        p = make_serve(*args, env=env, dry_run=True, stdout=subprocess.PIPE)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0
        return out

    out = command(env={"ACCOUNTS_GRPC_PORT": "9000", "ACCOUNTS_HTTP_PORT": "9080"})
    assert "accounts_grpc.cli serve" in out
    assert "--grpc-port" not in out and "--http-port" not in out, out
    assert "--print-bootstrap" not in out, "ACCOUNTS_PRINT_BOOTSTRAP decides"
    out = command("GRPC_PORT=9001", "HTTP_PORT=9081", env={"ACCOUNTS_GRPC_PORT": "9000"})
    assert "--grpc-port 9001 --http-port 9081" in out, out


@needs_make
def test_make_serve_honours_the_accounts_variables(tmp_path: Path) -> None:
    """ACCOUNTS_GRPC_PORT=... make serve listens there (the Makefile passed its own ports
    as flags before, which beat the variables)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        grpc_port, http_port = a.getsockname()[1], b.getsockname()[1]
    env = {"ACCOUNTS_GRPC_PORT": str(grpc_port), "ACCOUNTS_HTTP_PORT": str(http_port),
           "ACCOUNTS_BIND_HOST": "127.0.0.1", "ACCOUNTS_PROCESSES": "1",
           "ACCOUNTS_DATABASE_URL": f"sqlite:///{tmp_path / 'accounts.db'}",
           "ACCOUNTS_DRAIN_DELAY": "0", "ACCOUNTS_SHUTDOWN_GRACE": "1",
           "ACCOUNTS_PRINT_BOOTSTRAP": "false"}
    proc = make_serve(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                      start_new_session=True)
    server = LoggedProcess(proc)
    threading.Thread(target=server.read_stderr, daemon=True).start()
    try:
        server.wait_for(rf"serving gRPC on 127\.0\.0\.1:{grpc_port}, "
                        rf"HTTP on 127\.0\.0\.1:{http_port}", timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the server it runs
        proc.wait(30)
    assert "client_secret" not in server.log, "ACCOUNTS_PRINT_BOOTSTRAP=false was honoured"
