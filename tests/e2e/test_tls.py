"""TLS and mutual TLS on both ports, with a CA the test makes (trustme), through the
clients people use: grpcurl ``-cacert``, a grpc channel with ``ssl_channel_credentials``,
httpx and requests-oauthlib (which refuses plain HTTP unless told otherwise, and is not
told here). A plaintext client, and under mutual TLS a client without a certificate from
the CA, fails its handshake on either port; ``serve --processes 2`` configured by
``ACCOUNTS_TLS_*`` variables (as ``make serve`` passes them) serves TLS from every worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import requests
import trustme
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import session_service_pb2_grpc, user_pb2, user_service_pb2, user_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from oauthlib.oauth2 import BackendApplicationClient, InsecureTransportError
from requests_oauthlib import OAuth2Session

from tests import support
from tests.e2e.test_server import grpcurl, needs_grpcurl
from tests.serving import CLI, LoggedProcess, clean_env, cli

pytestmark = pytest.mark.timeout(180)

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate from it for localhost, a client certificate from it, and
    a client certificate from another CA (files, and the PEM bytes clients need)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client: Path  # key and chain in one file (curl's, requests' and ssl's form)
    client_key: Path
    client_cert: Path
    stranger: Path  # a client of another CA

    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()

    def client_context(self, client: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client is not None:
            ctx.load_cert_chain(str(client))
        return ctx

    def channel_credentials(self, client: Path | None = None) -> grpc.ChannelCredentials:
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca_pem())
        pem = client.read_bytes()
        key = re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                        pem, re.S)
        assert key is not None
        chain = b"".join(re.findall(
            rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", pem, re.S))
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem(),
                                            private_key=key.group(0), certificate_chain=chain)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("reporting-service@example.com")
    stranger = trustme.CA().issue_cert("someone@example.com")
    paths = Pki(d / "ca.pem", d / "server.pem", d / "server-key.pem", d / "client.pem",
                d / "client-key.pem", d / "client-cert.pem", d / "stranger.pem")
    ca.cert_pem.write_to_path(str(paths.ca))
    paths.server_cert.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths.client))
    client.private_key_pem.write_to_path(str(paths.client_key))
    paths.client_cert.write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(paths.stranger))
    return paths


@dataclass
class TlsServer:
    app: Any
    client_id: str
    client_secret: str

    @property
    def target(self) -> str:
        return f"localhost:{self.app.grpc_port}"

    @property
    def base(self) -> str:
        return f"https://localhost:{self.app.http_port}"


@contextlib.contextmanager
def tls_server(backend: str, tmp: Path, pki: Pki, *, mutual: bool) -> Iterator[TlsServer]:
    from accounts_grpc.app import App
    from accounts_grpc.services.bootstrap import bootstrap

    with support.database_url(backend, tmp) as url:
        settings = support.test_settings(
            url, tmp, tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
            tls_client_ca_file=str(pki.ca) if mutual else "")
        app = App(settings, auto_migrate=True)
        app.start()
        try:
            boot = bootstrap(app.db)
            yield TlsServer(app, boot.client_id, boot.client_secret)
        finally:
            app.stop(grace=1.0)


@pytest.fixture(scope="module")
def tls(backend: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(backend, tmp_path_factory.mktemp(f"tls-{backend}"), pki,
                    mutual=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def mtls(backend: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(backend, tmp_path_factory.mktemp(f"mtls-{backend}"), pki,
                    mutual=True) as srv:
        yield srv


def create_token(channel: grpc.Channel, client_id: str, secret: str) -> str:
    return str(session_service_pb2_grpc.SessionServiceStub(channel).CreateToken(
        spb.CreateTokenRequest(client_id=client_id, client_secret=secret),
        timeout=10).access_token)


def get_me(channel: grpc.Channel, token: str) -> Any:
    return user_service_pb2_grpc.UserServiceStub(channel).GetMe(
        user_service_pb2.GetMeRequest(), metadata=support.bearer(token), timeout=10)


def health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10).status)


def token_over_rest(client: httpx.Client, base: str, srv: TlsServer) -> str:
    r = client.post(f"{base}/v1/token", data={
        "grant_type": "client_credentials", "client_id": srv.client_id,
        "client_secret": srv.client_secret})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


# -- TLS ------------------------------------------------------------------------------------


def test_a_grpc_channel_with_the_ca_calls_and_checks_health(tls: TlsServer, pki: Pki) -> None:
    with grpc.secure_channel(tls.target, pki.channel_credentials()) as channel:
        assert health(channel) == SERVING
        token = create_token(channel, tls.client_id, tls.client_secret)
        assert get_me(channel, token).user.kind == user_pb2.USER_KIND_MACHINE


@needs_grpcurl
def test_grpcurl_with_cacert(tls: TlsServer, pki: Pki) -> None:
    ca = ["-cacert", str(pki.ca)]
    creds = json.dumps({"client_id": tls.client_id, "client_secret": tls.client_secret})
    got = grpcurl(*ca, "-d", creds, tls.target, "accounts.v1.SessionService/CreateToken")
    assert got.returncode == 0, got.stderr
    token = json.loads(got.stdout)["access_token"]
    me = grpcurl(*ca, "-H", f"authorization: Bearer {token}", tls.target,
                 "accounts.v1.UserService/GetMe")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["user"]["kind"] == "USER_KIND_MACHINE"
    checked = grpcurl(*ca, tls.target, "grpc.health.v1.Health/Check")
    assert checked.returncode == 0 and json.loads(checked.stdout) == {"status": "SERVING"}
    # grpcurl trusts only the system's CAs without -cacert: this CA is not one of them
    untrusted = grpcurl(tls.target, "grpc.health.v1.Health/Check")
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr, untrusted.stderr


def test_https_probes_discovery_and_calls(tls: TlsServer, pki: Pki) -> None:
    with httpx.Client(verify=pki.client_context(), timeout=10) as client:
        assert client.get(f"{tls.base}/healthz").status_code == 200
        ready = client.get(f"{tls.base}/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        for path in ("/.well-known/oauth-authorization-server",
                     "/.well-known/openid-configuration"):
            doc = client.get(tls.base + path).json()
            for member in ("token_endpoint", "jwks_uri", "introspection_endpoint",
                           "revocation_endpoint"):
                assert doc[member].startswith(f"{tls.base}/"), (path, member, doc[member])
        token = token_over_rest(client, tls.base, tls)
        me = client.get(f"{tls.base}/v1/me", headers={"authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["user"]["kind"] == "USER_KIND_MACHINE"


def test_requests_oauthlib_gets_a_token_without_the_insecure_override(
    tls: TlsServer, pki: Pki
) -> None:
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ
    metadata = requests.get(f"{tls.base}/.well-known/oauth-authorization-server",
                            verify=str(pki.ca), timeout=10).json()
    session = OAuth2Session(client=BackendApplicationClient(client_id=tls.client_id))
    token = session.fetch_token(metadata["token_endpoint"], client_id=tls.client_id,
                                client_secret=tls.client_secret, verify=str(pki.ca),
                                timeout=10)
    assert token["token_type"] == "Bearer" and token["access_token"]
    me = session.get(f"{tls.base}/v1/me", verify=str(pki.ca), timeout=10)
    assert me.status_code == 200, me.text
    # what the issue saw before: the library will not send a secret over plain HTTP
    with pytest.raises(InsecureTransportError):
        session.fetch_token(f"http://localhost:{tls.app.http_port}/v1/token",
                            client_id=tls.client_id, client_secret=tls.client_secret)


def test_plaintext_and_untrusting_clients_fail(tls: TlsServer, pki: Pki) -> None:
    with grpc.insecure_channel(tls.target) as channel, pytest.raises(grpc.RpcError) as e:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.TransportError):
        client.get(f"http://localhost:{tls.app.http_port}/healthz")
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.ConnectError,
                                                           match="CERTIFICATE_VERIFY_FAILED"):
        client.get(f"{tls.base}/healthz")  # the system's CAs only
    with grpc.secure_channel(tls.target, grpc.ssl_channel_credentials()) as channel, \
            pytest.raises(grpc.RpcError) as e:
        health(channel)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


# -- mutual TLS -----------------------------------------------------------------------------


def test_mutual_tls_takes_a_client_certificate_from_the_ca(mtls: TlsServer, pki: Pki) -> None:
    with grpc.secure_channel(mtls.target, pki.channel_credentials(pki.client)) as channel:
        assert health(channel) == SERVING
        token = create_token(channel, mtls.client_id, mtls.client_secret)
        assert get_me(channel, token).user.id
    with httpx.Client(verify=pki.client_context(pki.client), timeout=10) as client:
        assert client.get(f"{mtls.base}/readyz").status_code == 200
        token = token_over_rest(client, mtls.base, mtls)
        me = client.get(f"{mtls.base}/v1/me", headers={"authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_mutual_tls_refuses_other_clients_on_both_ports(mtls: TlsServer, pki: Pki,
                                                        who: str) -> None:
    client = None if who == "no certificate" else pki.stranger
    with grpc.secure_channel(mtls.target, pki.channel_credentials(client)) as channel, \
            pytest.raises(grpc.RpcError) as e:
        health(channel)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with httpx.Client(verify=pki.client_context(client), timeout=10) as http, \
            pytest.raises(httpx.TransportError):
        http.get(f"{mtls.base}/healthz")


@needs_grpcurl
def test_grpcurl_and_curl_with_a_client_certificate(mtls: TlsServer, pki: Pki) -> None:
    """The README's commands under mutual TLS."""
    tls_flags = ["-cacert", str(pki.ca), "-cert", str(pki.client_cert),
                 "-key", str(pki.client_key)]
    checked = grpcurl(*tls_flags, mtls.target, "grpc.health.v1.Health/Check")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {"status": "SERVING"}
    refused = grpcurl("-cacert", str(pki.ca), mtls.target, "grpc.health.v1.Health/Check")
    assert refused.returncode != 0
    curl = subprocess.run(["curl", "-sS", "--cacert", str(pki.ca), "--cert",
                           str(pki.client_cert), "--key", str(pki.client_key),
                           f"{mtls.base}/readyz"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert curl.returncode == 0 and json.loads(curl.stdout) == {"ready": True}, curl.stderr


# -- serve --processes 2, configured by ACCOUNTS_* variables ----------------------------------


def test_every_worker_serves_mutual_tls_from_the_environment(
    backend: str, pki: Pki, tmp_path: Path
) -> None:
    with support.database_url(backend, tmp_path) as url:
        kek = ["--key-encryption-key-file", str(tmp_path / "test.kek")]
        if backend == "postgres":
            cli("migrate", "--database-url", url)
        env = {**clean_env(), "TMPDIR": str(tmp_path), "ACCOUNTS_DATABASE_URL": url,
               "ACCOUNTS_TLS_CERT_FILE": str(pki.server_cert),
               "ACCOUNTS_TLS_KEY_FILE": str(pki.server_key),
               "ACCOUNTS_TLS_CLIENT_CA_FILE": str(pki.ca)}
        proc = subprocess.Popen(
            [*CLI, "serve", "--processes", "2", *kek, "--bind-host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--print-bootstrap",
             "--log-level", "INFO"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        served = LoggedProcess(proc)
        reader = threading.Thread(target=served.read_stderr, daemon=True)
        reader.start()
        try:
            m = served.wait_for(r"serving gRPC on 127\.0\.0\.1:(\d+), HTTP on "
                                r"127\.0\.0\.1:(\d+), 2 processes", timeout=120)
            grpc_port, http_port = int(m.group(1)), int(m.group(2))
            client_id = served.wait_for(r"client_id:\s+(\S+)").group(1)
            secret = served.wait_for(r"client_secret:\s+(\S+)").group(1)
            # the first steps name the flags a TLS client needs
            assert "grpcurl -cacert CA.pem -cert CLIENT.pem -key CLIENT-KEY.pem" in served.log
            assert f"--key CLIENT-KEY.pem https://localhost:{http_port}/v1/token" in served.log
            for _ in range(6):  # new connections: the kernel hands them to either worker
                with grpc.secure_channel(
                        f"localhost:{grpc_port}", pki.channel_credentials(pki.client),
                        options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                    assert health(channel) == SERVING
                    assert create_token(channel, client_id, secret)
                with httpx.Client(verify=pki.client_context(pki.client), timeout=10) as http:
                    r = http.get(f"https://localhost:{http_port}/readyz")
                    assert r.status_code == 200, r.text
                with grpc.secure_channel(f"localhost:{grpc_port}",
                                         pki.channel_credentials(),
                                         options=[("grpc.use_local_subchannel_pool", 1)]
                                         ) as channel, pytest.raises(grpc.RpcError):
                    health(channel)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(30) == 0, served.log
            finally:
                if proc.poll() is None:
                    proc.kill()
                reader.join(10)
