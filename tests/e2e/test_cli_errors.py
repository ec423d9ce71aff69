"""A command that cannot start says why in one line, naming the setting, and exits
non-zero: real ``accounts-grpc`` processes (tests/serving.py), every command where the
failure applies: a bad database URL, an unknown scheme, a database that is down, a port
in use, a key-encryption key missing, malformed or wrong."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from accounts_grpc.config import Settings
from tests import support
from tests.serving import CLI, clean_env, cli

LOCAL = ["--bind-host", "127.0.0.1"]
#: the commands, each with what it needs besides the failure under test
SERVE_1 = ["serve", "--processes", "1", *LOCAL, "--grpc-port", "0", "--http-port", "-1"]
SERVE_2 = ["serve", "--processes", "2", *LOCAL, "--grpc-port", "0", "--http-port", "-1"]
COMMANDS = {
    "serve-1": SERVE_1,
    "serve-2": SERVE_2,
    "migrate": ["migrate"],
    "bootstrap": ["bootstrap"],
    "keys-list": ["keys", "list"],
    "keys-rotate": ["keys", "rotate"],
}
#: the commands that read the key-encryption key (migrate needs none)
KEK_COMMANDS = [c for c in COMMANDS if c != "migrate"]
SECRET = "hunter2"


def fails(*args: str) -> str:
    """The one line a command that must fail writes to stderr."""
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, env=clean_env(),
                       timeout=120, check=False)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("accounts-grpc: "), lines
    assert SECRET not in lines[0], "a password or key is never printed"
    return lines[0]


def names(setting: str) -> str:
    """How a startup error names a setting: ``--flag (ACCOUNTS_VARIABLE): ``."""
    return f"{Settings.flag(setting)} ({Settings.env_name(setting)}): "


def new_key() -> str:
    """A key-encryption key (pass it as ``--key-encryption-key=...``: one may start
    with a dash)."""
    return Fernet.generate_key().decode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def listening() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def sqlite(tmp: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{tmp / 'accounts.db'}"]


# -- the database URL ----------------------------------------------------------------------


@pytest.mark.parametrize("url, commands, says", [
    ("nonsense", ["serve-1", "migrate"], "must be a URL"),
    # the issue's case: NoSuchModuleError and a traceback, before
    (f"postgresq://postgres:{SECRET}@127.0.0.1:5432/accounts", list(COMMANDS),
     "unknown scheme 'postgresq'"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:x5432/accounts", ["migrate", "bootstrap"],
     "is not a database URL this server can use"),
])
def test_a_bad_database_url(url: str, commands: list[str], says: str, tmp_path: Path) -> None:
    for command in commands:
        line = fails(*COMMANDS[command], "--database-url", url,
                     f"--key-encryption-key={new_key()}")
        assert "ACCOUNTS_DATABASE_URL" in line and says in line, (command, line)
        assert "sqlite:///<file> or postgresql://" in line or "x5432" in line, line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_database_that_is_down(command: str) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{closed_port()}/accounts"
    line = fails(*COMMANDS[command], "--database-url", url, f"--key-encryption-key={new_key()}")
    assert names("database_url") + "cannot connect to postgresql" in line, line
    assert "Connection refused" in line and "postgres:***@" in line, line


def test_a_sqlite_file_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    url = f"sqlite:///{tmp_path / 'file' / 'accounts.db'}"
    for command in ("serve-1", "migrate"):
        line = fails(*COMMANDS[command], "--database-url", url)
        assert line.startswith("accounts-grpc: " + names("database_url")), line
        assert f"cannot create the directory {tmp_path / 'file'} for " in line, line


@pytest.mark.parametrize("backend", support.backends())
def test_an_old_schema(backend: str, tmp_path: Path) -> None:
    if backend != "postgres":
        pytest.skip("SQLite is migrated by `serve` itself")
    with support.database_url(backend, tmp_path) as url:
        for command in ("serve-1", "serve-2"):
            line = fails(*COMMANDS[command], "--database-url", url,
                         f"--key-encryption-key={new_key()}")
            assert names("database_url") + "the schema of" in line, line
            assert "run `accounts-grpc migrate` first" in line, line


# -- the ports -----------------------------------------------------------------------------


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("setting", ["grpc_port", "http_port"])
def test_a_port_in_use(processes: str, setting: str, tmp_path: Path) -> None:
    with listening() as port:
        ports = {"grpc_port": "0", "http_port": "0", setting: str(port)}
        line = fails("serve", "--processes", processes, *sqlite(tmp_path), *LOCAL,
                     "--grpc-port", ports["grpc_port"], "--http-port", ports["http_port"],
                     f"--key-encryption-key={new_key()}")
    assert names(setting) + f"cannot listen on 127.0.0.1:{port}: " in line, line
    assert "in use" in line, line
    assert not (tmp_path / "accounts.db").exists(), "a failed start changes nothing"


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_address_that_is_not_this_hosts(processes: str, tmp_path: Path) -> None:
    line = fails("serve", "--processes", processes, *sqlite(tmp_path),
                 "--bind-host", "192.0.2.1",  # TEST-NET-1: never an address of ours
                 "--grpc-port", "0", "--http-port", "0")
    assert names("bind_host") + "cannot listen on 192.0.2.1:0" in line, line


# -- the key-encryption key ----------------------------------------------------------------


@pytest.mark.parametrize("command", KEK_COMMANDS)
def test_a_key_encryption_key_that_is_not_a_key(command: str, tmp_path: Path) -> None:
    line = fails(*COMMANDS[command], *sqlite(tmp_path),
                 "--key-encryption-key", f"not-a-key-{SECRET}")
    assert names("key_encryption_key") + "is not a key" in line, line


def test_a_key_encryption_key_file_that_is_not_a_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kek"
    bad.write_text(f"{SECRET}\n")
    for command in ("serve-1", "keys-list"):
        line = fails(*COMMANDS[command], *sqlite(tmp_path),
                     "--key-encryption-key-file", str(bad))
        assert names("key_encryption_key_file") + f"{bad} does not hold a key" in line, line
    (tmp_path / "file").write_text("not a directory")
    line = fails(*COMMANDS["bootstrap"], *sqlite(tmp_path), "--key-encryption-key-file",
                 str(tmp_path / "file" / "accounts.kek"))
    assert names("key_encryption_key_file") + "cannot read or create" in line, line


@pytest.mark.parametrize("backend", support.backends())
def test_the_wrong_key_encryption_key(backend: str, tmp_path: Path) -> None:
    with support.database_url(backend, tmp_path) as url:
        cli("keys", "list", "--database-url", url, f"--key-encryption-key={new_key()}")
        for command in KEK_COMMANDS:
            line = fails(*COMMANDS[command], "--database-url", url,
                         f"--key-encryption-key={new_key()}")
            assert names("key_encryption_key") + "the key-encryption key does not decrypt" \
                in line, (command, line)
        wrong = tmp_path / "wrong.kek"
        wrong.write_text(new_key())
        line = fails(*SERVE_1, "--database-url", url, "--key-encryption-key-file", str(wrong))
        assert names("key_encryption_key_file") + "the key-encryption key does not decrypt" \
            in line, line


@pytest.mark.skipif(not os.environ.get(support.PG_ENV),
                    reason=f"needs PostgreSQL ({support.PG_ENV})")
def test_no_key_encryption_key_on_postgresql(tmp_path: Path) -> None:
    """tests/e2e/test_key_encryption_key.py runs each command; here the supervisor too."""
    with support.database_url("postgres", tmp_path) as url:
        cli("migrate", "--database-url", url)
        line = fails(*SERVE_2, "--database-url", url)
        assert "PostgreSQL needs an explicit key-encryption key" in line, line
        assert "--key-encryption-key (ACCOUNTS_KEY_ENCRYPTION_KEY)" in line, line


# -- TLS and CORS --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files, good and bad, by name."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    d = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    leaf, other = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    files = {
        "cert": leaf.cert_chain_pems[0].bytes(),
        "key": leaf.private_key_pem.bytes(),
        "other_key": other.private_key_pem.bytes(),
        "encrypted_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(SECRET.encode())),
        "ca": ca.cert_pem.bytes(),
        "junk": b"not PEM at all\n",
    }
    for name, data in files.items():
        (d / f"{name}.pem").write_bytes(data)
    return {name: str(d / f"{name}.pem") for name in [*files, "missing"]}


@pytest.mark.parametrize("cert, key, ca, setting, says", [
    ("missing", "key", "", "tls_cert_file", "cannot read {missing}: No such file"),
    ("junk", "key", "", "tls_cert_file", "{junk} holds no PEM certificate"),
    ("cert", "junk", "", "tls_key_file", "{junk} holds no PEM private key"),
    ("cert", "other_key", "", "tls_key_file", "{other_key} is not the key of the certificate "
     "in {cert}"),
    ("cert", "encrypted_key", "", "tls_key_file", "{encrypted_key} is encrypted"),
    ("cert", "key", "junk", "tls_client_ca_file", "{junk} holds no PEM certificate"),
    ("cert", "key", "missing", "tls_client_ca_file", "cannot read {missing}"),
])
@pytest.mark.parametrize("command", ["serve-1", "serve-2"])
def test_a_tls_file_that_will_not_do(command: str, cert: str, key: str, ca: str, setting: str,
                                     says: str, pem: dict[str, str], tmp_path: Path) -> None:
    line = fails(*COMMANDS[command], *sqlite(tmp_path), f"--key-encryption-key={new_key()}",
                 "--tls-cert-file", pem[cert], "--tls-key-file", pem[key],
                 "--tls-client-ca-file", pem[ca] if ca else "")
    assert names(setting) + says.format(**pem) in line, line
    assert not (tmp_path / "accounts.db").exists(), "a failed start changes nothing"


@pytest.mark.parametrize("flags, says", [
    (["--tls-cert-file", "cert.pem"],
     "tls_key_file (ACCOUNTS_TLS_KEY_FILE) must be set too when --tls-cert-file is"),
    (["--tls-key-file", "key.pem"],
     "tls_cert_file (ACCOUNTS_TLS_CERT_FILE) must be set too when --tls-key-file is"),
    (["--tls-client-ca-file", "ca.pem"],
     "tls_client_ca_file (ACCOUNTS_TLS_CLIENT_CA_FILE) must be empty without --tls-cert-file"),
    (["--cors-allowed-origins", "https://app.example.com,*"],
     "cors_allowed_origins (ACCOUNTS_CORS_ALLOWED_ORIGINS) must be origins as a browser "
     "sends them"),
    (["--cors-allowed-origins", "https://app.example.com/"], "not 'https://app.example.com/'"),
])
def test_settings_that_go_together(flags: list[str], says: str, tmp_path: Path) -> None:
    for command in ("serve-1", "serve-2"):
        line = fails(*COMMANDS[command], *sqlite(tmp_path), *flags)
        assert says in line, line
