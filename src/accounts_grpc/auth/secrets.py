"""Client secrets and session tokens: high-entropy random strings, stored as SHA-256.

A slow password hash buys nothing for 256-bit random values and would only slow the
token endpoint; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CLIENT_ID_PREFIX = "cid_"
CLIENT_SECRET_PREFIX = "cs_"
SESSION_TOKEN_PREFIX = "st_"


def new_client_id() -> str:
    return CLIENT_ID_PREFIX + secrets.token_hex(12)


def new_client_secret() -> str:
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(value: str) -> str:
    """SHA-256 hex of a secret or token: what the database keeps."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def verify_secret(value: str, stored_hash: str | None) -> bool:
    """Constant-time check of ``value`` against a stored hash (False when none is stored)."""
    candidate = hash_secret(value)
    if not stored_hash:
        hmac.compare_digest(candidate, candidate)  # same work either way
        return False
    return hmac.compare_digest(candidate, stored_hash)
