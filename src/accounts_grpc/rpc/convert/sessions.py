"""Session rows, JWKs and introspection results ⇄ protos."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from accounts.v1 import session_pb2, session_service_pb2, user_pb2

from accounts_grpc.rpc.convert import ts
from accounts_grpc.rpc.convert.users import KIND_TO_PROTO
from accounts_grpc.services.exchange import ExchangeArgs, Exchanged
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


def exchange_args_of(req: session_service_pb2.ExchangeTokenRequest) -> ExchangeArgs:
    return ExchangeArgs(
        subject_token=req.subject_token,
        subject_token_type=req.subject_token_type,
        account_id=req.account_id,
        scope=req.scope,
        actor_user_id=req.actor_user_id,
        requested_token_type=req.requested_token_type,
        requested_lifetime=req.requested_lifetime,
        grant_type=req.grant_type,
    )


def exchanged_to_proto(out: Exchanged) -> session_service_pb2.ExchangeTokenResponse:
    return session_service_pb2.ExchangeTokenResponse(
        access_token=out.issued.token,
        issued_token_type=out.issued_token_type,
        token_type="Bearer",
        expires_in=out.issued.expires_in,
        scope=out.scope,
    )
