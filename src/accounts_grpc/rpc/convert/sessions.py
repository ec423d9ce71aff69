"""Session rows, JWKs and introspection results ⇄ protos."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from accounts.v1 import session_pb2, session_service_pb2, user_pb2

from accounts_grpc.rpc.convert import ts
from accounts_grpc.rpc.convert.users import KIND_TO_PROTO
from accounts_grpc.services.sessions import TokenInfo, UserRefArgs

_JWK_FIELDS = tuple(f.name for f in session_pb2.Jwk.DESCRIPTOR.fields)


def user_ref_of(ref: user_pb2.UserRef) -> UserRefArgs:
    return UserRefArgs(user_id=ref.user_id, external_id=ref.external_id, account_id=ref.account_id)


def session_to_proto(row: Any) -> session_pb2.Session:
    return session_pb2.Session(
        id=row.id,
        user_id=row.user_id,
        account_id=row.account_id,
        create_time=ts(row.create_time),
        last_activity_time=ts(row.last_activity_time),
        expire_time=ts(row.expire_time),
        revoke_time=ts(row.revoke_time),
        user_agent=row.user_agent,
        update_time=ts(row.update_time),
        etag=row.etag,
    )


def jwk_to_proto(jwk: Mapping[str, Any]) -> session_pb2.Jwk:
    """The RFC 7517 members the proto names; others (``key_ops``, ...) are left out."""
    return session_pb2.Jwk(**{k: str(jwk[k]) for k in _JWK_FIELDS if jwk.get(k)})


def jwks_to_proto(keys: Iterable[Mapping[str, Any]]) -> session_service_pb2.GetJwksResponse:
    return session_service_pb2.GetJwksResponse(keys=[jwk_to_proto(k) for k in keys])


def token_info_to_proto(info: TokenInfo) -> session_service_pb2.IntrospectTokenResponse:
    if not info.active:
        return session_service_pb2.IntrospectTokenResponse(active=False)
    return session_service_pb2.IntrospectTokenResponse(
        active=True,
        token_type=info.token_type,
        sub=info.sub,
        account_id=info.account_id,
        roles=list(info.roles),
        kind=KIND_TO_PROTO.get(info.kind, user_pb2.USER_KIND_UNSPECIFIED),
        iss=info.iss,
        aud=info.aud,
        jti=info.jti,
        exp=info.exp,
        iat=info.iat,
        client_id=info.client_id,
        scope=info.scope,
    )
