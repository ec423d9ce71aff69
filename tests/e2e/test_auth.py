"""Authentication end to end: the real server on a free port, a real channel.

Every bad token is UNAUTHENTICATED with ``google.rpc.ErrorInfo`` (domain accounts.v1 and
a reason); revocation, a closed account and a deleted user take effect on the very next
call; an RPC without an access rule is denied; secrets never reach the logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import sqlalchemy as sa
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as upb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import json_format

from accounts_grpc.store.tables import accounts, users
from tests.e2e.auth_helpers import (
    UserCreds,
    claims_for,
    make_account,
    make_user,
    raw_jwt,
    sign_with_server_key,
    token_for,
)
from tests.support import Server, bearer, expect_error, failure, running_server

UNAUTH = grpc.StatusCode.UNAUTHENTICATED


def get_me(srv: Server, token: str) -> upb.GetMeResponse:
    return srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=bearer(token), timeout=10)


def expect_unauthenticated(srv: Server, token: str, reason: str) -> None:
    f = expect_error(get_me, srv, token, code=UNAUTH, reason=reason)
    assert f.message, "the status says why"


@pytest.fixture(scope="module")
def member(server: Server) -> UserCreds:
    """A plain machine user in an account of its own."""
    return make_user(server, make_account(server), roles=())


# -- the token flow --------------------------------------------------------------------------


def test_create_token_then_get_me(server: Server, member: UserCreds) -> None:
    resp = server.stubs.sessions.CreateToken(
        spb.CreateTokenRequest(
            grant_type="client_credentials",
            client_id=member.client_id,
            client_secret=member.client_secret,
        )
    )
    assert resp.token_type == "Bearer"
    assert resp.expires_in == 86400
    header = jwt.get_unverified_header(resp.access_token)
    assert header["alg"] == server.app.settings.signing_alg == "ES256"  # the default
    claims = jwt.decode(resp.access_token, options={"verify_signature": False})
    assert {"iss", "sub", "aud", "iat", "exp", "jti", "account_id", "roles", "kind"} <= set(claims)
    assert claims["sub"] == member.id
    assert claims["account_id"] == member.account_id
    assert claims["roles"] == ["member"]
    assert claims["kind"] == "MACHINE"
    assert claims["exp"] - claims["iat"] == 86400

    me = get_me(server, resp.access_token)
    assert me.user.id == member.id
    assert me.user.kind == user_pb2.USER_KIND_MACHINE
    assert me.account.id == member.account_id


def test_jwks_verifies_tokens_offline(server: Server, member: UserCreds) -> None:
    """GetJwks is RFC 7517: a stock JOSE library verifies our tokens with it."""
    token = token_for(server, member)
    jwks = server.stubs.sessions.GetJwks(spb.GetJwksRequest())  # public: no token
    as_json = json_format.MessageToDict(jwks, preserving_proto_field_name=True)
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [k for k in as_json["keys"] if k["kid"] == kid]
    assert jwk["use"] == "sig" and jwk["alg"] == "ES256" and jwk["kty"] == "EC"
    assert jwk["crv"] == "P-256"
    assert "d" not in jwk and "p" not in jwk, "never a private member"
    key = jwt.PyJWK.from_dict(jwk)
    claims = jwt.decode(
        token, key.key, algorithms=[jwk["alg"]],
        audience=server.app.settings.audience, issuer=server.app.settings.issuer,
    )
    assert claims["sub"] == member.id


def test_bad_client_credentials(server: Server, member: UserCreds) -> None:
    expect_error(
        server.stubs.sessions.CreateToken,
        spb.CreateTokenRequest(client_id=member.client_id, client_secret="cs_wrong"),
        code=UNAUTH, reason="INVALID_CLIENT",
    )
    expect_error(
        server.stubs.sessions.CreateToken,
        spb.CreateTokenRequest(client_id="cid_nobody", client_secret=member.client_secret),
        code=UNAUTH, reason="INVALID_CLIENT",
    )
    expect_error(
        server.stubs.sessions.CreateToken,
        spb.CreateTokenRequest(
            grant_type="password", client_id=member.client_id, client_secret="x"
        ),
        code=grpc.StatusCode.INVALID_ARGUMENT, reason="UNSUPPORTED_GRANT_TYPE",
        field="grant_type",
    )


# -- bad tokens ------------------------------------------------------------------------------


def _kid(srv: Server) -> str:
    return srv.app.keys.signing_key().kid


def _public_pem(srv: Server) -> bytes:
    return srv.app.keys.signing_key().public_key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _tampered(srv: Server, u: UserCreds) -> str:
    head, payload, sig = token_for(srv, u).split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["roles"] = ["admin"]  # the payload changed, the signature did not
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{head}.{forged}.{sig}"


def _other_rsa_key_same_kid(srv: Server, u: UserCreds) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims_for(srv, u), other, algorithm="RS256", headers={"kid": _kid(srv)})


def _es256_same_kid(srv: Server, u: UserCreds) -> str:
    other = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims_for(srv, u), other, algorithm="ES256", headers={"kid": _kid(srv)})


def _alg_none(srv: Server, u: UserCreds) -> str:
    return raw_jwt({"alg": "none", "typ": "JWT", "kid": _kid(srv)}, claims_for(srv, u))


def _alg_none_no_kid(srv: Server, u: UserCreds) -> str:
    return raw_jwt({"alg": "none", "typ": "JWT"}, claims_for(srv, u))


def _hs256_with_public_key(srv: Server, u: UserCreds) -> str:
    """The classic key-confusion attack: HMAC keyed with the RSA public key's PEM."""
    return raw_jwt(
        {"alg": "HS256", "typ": "JWT", "kid": _kid(srv)}, claims_for(srv, u),
        hmac_key=_public_pem(srv),
    )


def _unknown_kid(srv: Server, u: UserCreds) -> str:
    key = srv.app.keys.signing_key()
    return jwt.encode(claims_for(srv, u), key.private_key, algorithm=key.alg,
                      headers={"kid": "no-such-key"})


def _no_kid(srv: Server, u: UserCreds) -> str:
    key = srv.app.keys.signing_key()
    return jwt.encode(claims_for(srv, u), key.private_key, algorithm=key.alg)


def _signed(**changes: Any) -> Callable[[Server, UserCreds], str]:
    def make(srv: Server, u: UserCreds) -> str:
        return sign_with_server_key(srv, claims_for(srv, u, **changes))

    return make


NOW = int(time.time())
BAD_TOKENS: dict[str, tuple[Callable[[Server, UserCreds], str], str]] = {
    "expired": (_signed(iat=NOW - 7200, exp=NOW - 3600), "TOKEN_EXPIRED"),
    "expired-beyond-leeway": (_signed(iat=NOW - 700, exp=NOW - 60), "TOKEN_EXPIRED"),
    "tampered-payload": (_tampered, "TOKEN_INVALID"),
    "wrong-key-same-kid": (_other_rsa_key_same_kid, "TOKEN_INVALID"),
    "es256-same-kid": (_es256_same_kid, "TOKEN_INVALID"),
    "alg-none": (_alg_none, "TOKEN_INVALID"),
    "alg-none-no-kid": (_alg_none_no_kid, "TOKEN_INVALID"),
    "hs256-signed-with-public-key": (_hs256_with_public_key, "TOKEN_INVALID"),
    "unknown-kid": (_unknown_kid, "TOKEN_UNKNOWN_KEY"),
    "no-kid": (_no_kid, "TOKEN_INVALID"),
    "wrong-iss": (_signed(iss="someone-else"), "TOKEN_INVALID"),
    "wrong-aud": (_signed(aud="another-service"), "TOKEN_INVALID"),
    "iat-in-the-future": (_signed(iat=NOW + 3600, exp=NOW + 7200), "TOKEN_INVALID"),
    "no-jti": (_signed(jti=None), "TOKEN_INVALID"),
    "no-exp": (_signed(exp=None), "TOKEN_INVALID"),
    "account-mismatch": (_signed(account_id="00000000-0000-0000-0000-000000000000"),
                         "TOKEN_INVALID"),
    "unknown-subject": (_signed(sub="00000000-0000-0000-0000-000000000000"), "USER_DELETED"),
    "garbage": (lambda s, u: "garbage", "TOKEN_INVALID"),
    "three-garbage-parts": (lambda s, u: "a.b.c", "TOKEN_INVALID"),
    "unknown-session-token": (lambda s, u: "st_" + "x" * 43, "TOKEN_INVALID"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_is_unauthenticated(server: Server, member: UserCreds, case: str) -> None:
    make, reason = BAD_TOKENS[case]
    expect_unauthenticated(server, make(server, member), reason)


def test_the_good_token_of_the_same_shape_works(server: Server, member: UserCreds) -> None:
    """Control for the cases above: the same claims, signed properly, are accepted."""
    assert get_me(server, _signed()(server, member)).user.id == member.id


def test_missing_and_malformed_authorization(server: Server) -> None:
    expect_error(server.stubs.users.GetMe, upb.GetMeRequest(), code=UNAUTH,
                 reason="TOKEN_MISSING")
    for value in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token-without-scheme"):
        expect_error(server.stubs.users.GetMe, upb.GetMeRequest(),
                     metadata=(("authorization", value),), code=UNAUTH,
                     reason="TOKEN_MALFORMED")


# -- tokens stop working at once ---------------------------------------------------------------


def test_revoked_session_is_dead_on_the_next_call(server: Server) -> None:
    u = make_user(server, make_account(server))
    created = server.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=u.id)), metadata=server.admin
    )
    assert get_me(server, created.access_token).user.id == u.id
    server.stubs.sessions.RevokeSession(
        spb.RevokeSessionRequest(id=created.session.id), metadata=server.admin
    )
    expect_unauthenticated(server, created.access_token, "SESSION_REVOKED")


def test_closed_account_tokens_are_dead_at_once(server: Server) -> None:
    aid = make_account(server)
    u = make_user(server, aid)
    token = token_for(server, u)
    session = server.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=u.id)), metadata=server.admin
    ).access_token
    assert get_me(server, token).user.id == u.id  # also puts the JWT in the verified cache
    assert get_me(server, session).user.id == u.id
    with server.app.db.write() as uow:  # CloseAccount's effect on the row
        uow.conn.execute(accounts.update().where(accounts.c.id == aid).values(closed=True))
        uow.commit()
    expect_unauthenticated(server, token, "ACCOUNT_CLOSED")
    expect_unauthenticated(server, session, "ACCOUNT_CLOSED")
    expect_error(
        server.stubs.sessions.CreateToken,
        spb.CreateTokenRequest(client_id=u.client_id, client_secret=u.client_secret),
        code=UNAUTH, reason="INVALID_CLIENT",
    )


def test_deleted_user_jwt_is_dead_on_the_next_call(server: Server) -> None:
    u = make_user(server, make_account(server))
    token = token_for(server, u)
    assert get_me(server, token).user.id == u.id  # verified and cached
    with server.app.db.write() as uow:  # DeleteUser's effect on the row
        uow.conn.execute(users.delete().where(users.c.id == u.id))
        uow.commit()
    expect_unauthenticated(server, token, "USER_DELETED")


def test_roles_come_from_the_database_not_the_token(server: Server) -> None:
    """A JWT's roles claim is a snapshot for other services; this server re-reads roles."""
    u = make_user(server, make_account(server), roles=("account-admin",))
    token = token_for(server, u)
    assert "account-admin" in get_me(server, token).user.roles
    with server.app.db.write() as uow:
        uow.conn.execute(users.update().where(users.c.id == u.id).values(roles=[]))
        uow.commit()
    info = server.stubs.sessions.IntrospectToken(
        spb.IntrospectTokenRequest(token=token), metadata=server.admin
    )
    assert info.active and list(info.roles) == ["member"]


# -- authorization: an RPC without an access rule ---------------------------------------------


def test_rpc_without_access_rule_is_denied(backend: str, tmp_path: Path) -> None:
    ran: list[bool] = []

    def no_rule(request: bytes, context: grpc.ServicerContext) -> bytes:
        ran.append(True)
        return b""

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        ran.append(True)
        yield b""

    handler = grpc.method_handlers_generic_handler(
        "accounts.v1.TestOnlyService",
        {"NoRule": grpc.unary_unary_rpc_method_handler(no_rule),
         "Stream": grpc.unary_stream_rpc_method_handler(stream)},
    )
    with running_server(backend, tmp_path, extra_handlers=[handler]) as srv:
        call = srv.channel.unary_unary(
            "/accounts.v1.TestOnlyService/NoRule",
            request_serializer=None, response_deserializer=None,
        )
        for metadata in (srv.admin, ()):  # not even an admin; not even unauthenticated
            with pytest.raises(grpc.RpcError) as e:
                call(b"", metadata=metadata, timeout=10)
            f = failure(e.value)
            assert f.code == grpc.StatusCode.PERMISSION_DENIED
            assert (f.domain, f.reason) == ("accounts.v1", "NO_ACCESS_RULE")
        # a streaming RPC in our package is refused too: the pipeline serves unary calls
        streaming = srv.channel.unary_stream(
            "/accounts.v1.TestOnlyService/Stream",
            request_serializer=None, response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as e:
            list(streaming(b"", metadata=srv.admin, timeout=10))
        assert failure(e.value).reason == "NO_ACCESS_RULE"
        assert ran == [], "the handlers never ran"


# -- key rotation ------------------------------------------------------------------------------


def test_key_rotation(backend: str, tmp_path: Path) -> None:
    with running_server(backend, tmp_path) as srv:
        u = make_user(srv, make_account(srv))
        old_token = token_for(srv, u)
        unused_old_token = token_for(srv, u)  # never verified, so never cached
        old_kid = jwt.get_unverified_header(old_token)["kid"]
        assert get_me(srv, old_token).user.id == u.id

        # what `accounts-grpc keys rotate` does, but switching at once (the phases:
        # tests/e2e/test_key_rotation.py)
        new_key = srv.app.keys.rotate(activate_in=0)
        assert new_key.kid != old_kid

        new_token = token_for(srv, u)
        assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid
        assert get_me(srv, new_token).user.id == u.id
        assert get_me(srv, old_token).user.id == u.id, "old tokens still verify"
        kids = [k.kid for k in srv.stubs.sessions.GetJwks(spb.GetJwksRequest()).keys]
        assert kids[0] == new_key.kid and old_kid in kids, "newest first, old key kept"

        # the old key stays until its last token can have expired
        [old] = [k for k in srv.app.keys.list_keys() if k.kid == old_kid]
        assert old.retire_time is not None and old.private_key is None
        old_exp = jwt.decode(old_token, options={"verify_signature": False})["exp"]
        assert old.expire_time is not None and old.expire_time // 1_000_000 > old_exp + 30

        # ... and then leaves the JWKS, and its tokens stop verifying
        from accounts_grpc.store.tables import signing_keys

        with srv.app.db.write() as uow:
            uow.conn.execute(
                signing_keys.update()
                .where(signing_keys.c.kid == old_kid)
                .values(expire_time=sa.literal(1))
            )
            uow.commit()
        srv.app.keys.refresh()
        kids = [k.kid for k in srv.stubs.sessions.GetJwks(spb.GetJwksRequest()).keys]
        assert kids == [new_key.kid]
        expect_unauthenticated(srv, unused_old_token, "TOKEN_UNKNOWN_KEY")


# -- secrets never logged ----------------------------------------------------------------------


def test_secrets_and_tokens_never_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    u = make_user(server, make_account(server))
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    token = token_for(server, u)
    created = server.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=u.id), user_agent="test-agent"),
        metadata=server.admin,
    )
    get_me(server, created.access_token)
    get_me(server, token)
    server.stubs.sessions.IntrospectToken(
        spb.IntrospectTokenRequest(token=created.access_token), metadata=bearer(token)
    )
    wrong = "cs_" + "w" * 43
    expect_error(
        server.stubs.sessions.CreateToken,
        spb.CreateTokenRequest(client_id=u.client_id, client_secret=wrong),
        code=UNAUTH,
    )
    expect_unauthenticated(server, created.access_token + "x", "TOKEN_INVALID")

    secrets = {
        "client secret": u.client_secret,
        "wrong secret": wrong,
        "jwt": token,
        "jwt signature": token.rsplit(".", 1)[1],
        "session token": created.access_token,
        "admin jwt": server.admin_token,
    }
    seen = caplog.text + "\n".join(
        repr(r.__dict__) for r in caplog.records
    )
    for what, value in secrets.items():
        assert value not in seen, f"the {what} was logged"

    calls = [r for r in caplog.records if r.name == "accounts_grpc.calls"]
    methods = {(getattr(r, "rpc_method", ""), getattr(r, "rpc_code", "")) for r in calls}
    assert ("/accounts.v1.SessionService/CreateToken", "OK") in methods
    assert ("/accounts.v1.SessionService/CreateToken", "UNAUTHENTICATED") in methods
    assert ("/accounts.v1.SessionService/CreateSession", "OK") in methods
    assert ("/accounts.v1.UserService/GetMe", "UNAUTHENTICATED") in methods
