"""The key-encryption key, through the real command: PostgreSQL (servers on several hosts)
needs one named explicitly and never gets a file generated at a default path; SQLite keeps
its default, a file generated beside the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests import support

pg_only = pytest.mark.skipif(not os.environ.get(support.PG_ENV),
                             reason=f"needs PostgreSQL ({support.PG_ENV})")


def run(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACCOUNTS_")}
    base.update(env)
    base["PYTHONPATH"] = os.pathsep.join(sys.path)  # cwd is elsewhere: find the package
    return subprocess.run([sys.executable, "-m", "accounts_grpc.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=base, timeout=120, check=False)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pg_only
def test_postgresql_without_a_key_encryption_key_is_a_clear_error(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with support.database_url("postgres", tmp_path / "db") as url:
        env = {"ACCOUNTS_DATABASE_URL": url, "ACCOUNTS_PROCESSES": "1",
               "ACCOUNTS_GRPC_PORT": "0", "ACCOUNTS_HTTP_PORT": "-1"}
        p = run(work, "migrate", env=env)
        assert p.returncode == 0, p.stderr  # the schema needs no key-encryption key
        for command in (["serve"], ["keys", "list"], ["keys", "rotate"], ["bootstrap"]):
            p = run(work, *command, env=env)
            assert p.returncode != 0, command
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
            assert lines[0].startswith(
                "accounts-grpc: PostgreSQL needs an explicit key-encryption key"), lines
            for name in ("--key-encryption-key", "ACCOUNTS_KEY_ENCRYPTION_KEY",
                         "--key-encryption-key-file", "ACCOUNTS_KEY_ENCRYPTION_KEY_FILE"):
                assert name in lines[0]
        assert files(work) == [], "no key-encryption key file was created anywhere"

        # named explicitly: the key itself, or a file (generated when missing, with a warning)
        key = {"ACCOUNTS_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode()}
        p = run(work, "keys", "list", "--json", env=env | key)
        assert p.returncode == 0, p.stderr
        [listed] = json.loads(p.stdout)
        assert listed["phase"] == "active"
        assert files(work) == []


@pg_only
def test_an_explicitly_named_file_is_created_with_a_warning(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with support.database_url("postgres", tmp_path / "db") as url:
        env = {"ACCOUNTS_DATABASE_URL": url,
               "ACCOUNTS_KEY_ENCRYPTION_KEY_FILE": str(work / "secrets" / "accounts.kek")}
        p = run(work, "keys", "list", env=env)
        assert p.returncode == 0, p.stderr
        assert "every server on this database needs this same key" in p.stderr
        assert files(work) == ["secrets", "secrets/accounts.kek"]


def test_sqlite_keeps_its_default_file_beside_the_database(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"ACCOUNTS_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'accounts.db'}"}
    p = run(work, "keys", "list", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "data" / "accounts.kek").exists()
    assert files(work) == []
