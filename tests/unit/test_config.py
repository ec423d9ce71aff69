"""Settings: one object, every setting a flag and an ACCOUNTS_* variable, --help lists them."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from accounts_grpc import cli
from accounts_grpc.config import Settings, SettingsError

FIELDS = [f.name for f in dataclasses.fields(Settings)]


def subparser(name: str) -> argparse.ArgumentParser:
    parser = cli._parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]  # type: ignore[no-any-return]


def help_text(name: str) -> str:
    return subparser(name).format_help()


def test_serve_help_lists_every_setting_with_its_variable() -> None:
    text = " ".join(help_text("serve").split())  # argparse wraps lines
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert f"env ACCOUNTS_{name.upper()};" in text, name


def test_every_serve_flag_has_a_variable() -> None:
    for action in subparser("serve")._actions:
        if not action.option_strings or "--help" in action.option_strings:
            continue
        assert action.help and re.search(r"\[env ACCOUNTS_[A-Z_]+; default ", action.help), (
            f"{action.option_strings} names no ACCOUNTS_* variable"
        )


@pytest.mark.parametrize("command", ["migrate", "bootstrap", "keys rotate", "keys list"])
def test_other_commands_flags_have_variables(command: str) -> None:
    words = command.split()
    parser = subparser(words[0])
    if len(words) == 2:
        [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = sub.choices[words[1]]
    for action in parser._actions:
        opts = action.option_strings
        if not opts or "--help" in opts or "--json" in opts:  # --json: output format
            continue
        assert action.help and "env ACCOUNTS_" in action.help, opts


def test_precedence_flag_over_variable_over_default() -> None:
    parser = subparser("serve")
    env = {"ACCOUNTS_GRPC_PORT": "6000", "ACCOUNTS_LOG_JSON": "true",
           "ACCOUNTS_SHUTDOWN_GRACE": "2.5"}
    s = Settings.load(parser.parse_args([]), env=env)
    assert (s.grpc_port, s.log_json, s.shutdown_grace) == (6000, True, 2.5)
    s = Settings.load(parser.parse_args(["--grpc-port", "7000", "--no-log-json"]), env=env)
    assert (s.grpc_port, s.log_json) == (7000, False)
    s = Settings.load(parser.parse_args([]), env={})
    assert s == Settings()
    assert s.grpc_port == 50051 and s.http_port == 8080 and s.token_lifetime == 86400
    assert s.session_ttl == 30 * 86400


def test_every_setting_reads_its_variable() -> None:
    samples = {"str": "x", "int": "7", "float": "1.5", "bool": "yes"}
    for f in dataclasses.fields(Settings):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        raw = {"signing_alg": "ES256", "log_level": "DEBUG", "database_url": "sqlite:///x.db",
               "http_max_body_bytes": "4096", "grpc_port": "7", "http_port": "7",
               "request_id_ttl": "7200", "trusted_proxies": "10.0.0.0/8",
               "http_max_header_bytes": "4096", "http_max_headers": "50",
               "cors_allowed_origins": "https://app.example.com",
               "otlp_endpoint": "http://otel-collector:4318"}.get(f.name, samples[kind])
        # the settings that are set only together (TLS: certificate and key, and a CA)
        tls = {"tls_cert_file", "tls_key_file", "tls_client_ca_file"}
        together = {Settings.env_name(n): "x" for n in ("tls_cert_file", "tls_key_file")
                    if f.name in tls}
        s = Settings.load(env={**together, Settings.env_name(f.name): raw})
        assert getattr(s, f.name) != f.default or raw == str(f.default), f.name


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(SystemExit, match="bad value 'lots' for grpc_workers"):
        Settings.load(env={"ACCOUNTS_GRPC_WORKERS": "lots"})
    with pytest.raises(SystemExit, match=r"grpc_workers \(ACCOUNTS_GRPC_WORKERS\)"):
        Settings.load(env={"ACCOUNTS_GRPC_WORKERS": "0"})
    with pytest.raises(SettingsError, match="signing_alg"):
        Settings(signing_alg="HS256")
    with pytest.raises(SettingsError, match="log_level"):
        Settings(log_level="LOUD")
    with pytest.raises(SettingsError, match="http_port"):
        Settings(http_port=-2)
    with pytest.raises(SettingsError, match="request_id_ttl"):
        Settings(request_id_ttl=60)


def test_concurrency_limit_never_exceeds_the_workers() -> None:
    assert Settings(grpc_workers=8).max_concurrent_rpcs == 8
    assert Settings(grpc_workers=8, grpc_max_concurrent_rpcs=4).max_concurrent_rpcs == 4
    assert Settings(grpc_workers=8, grpc_max_concurrent_rpcs=100).max_concurrent_rpcs == 8


def test_key_encryption_key_file_defaults_beside_the_sqlite_file() -> None:
    assert Settings(database_url="sqlite:///var/db/a.db").kek_path() == Path("var/db/accounts.kek")
    assert Settings(database_url="sqlite:////abs/a.db?x=1").kek_path() == Path(
        "/abs/accounts.kek")
    assert Settings(key_encryption_key_file="/k").kek_path() == Path("/k")
    assert Settings(database_url="postgresql://h/db").kek_path() == Path("data/accounts.kek")
