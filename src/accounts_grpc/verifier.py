"""An offline verifier of this service's JWT access tokens that also learns of revocations
within about a second, for other services to import (the standard library and PyJWT
only; nothing else of this package: an import-linter contract says so).

    verifier = Verifier("https://accounts.example.com", credentials=(client_id, secret),
                        audience="accounts-grpc", issuer="https://accounts.example.com")
    claims = verifier.verify(token)  # raises jwt.PyJWTError (Revoked is one) if not good
    ...
    verifier.close()

It checks a token's signature with the server's JWKS (``PyJWKClient``, fetched again for
a kid it does not know), its ``alg`` against the key's, ``iss``, ``aud``, ``exp`` and
``iat``. A background thread follows ``GET /v1/events:watch`` (WatchEvents as
newline-delimited JSON) with a token of its own (``credentials``: a client id and secret
of a machine user with the ``admin-reader`` role, traded for tokens at ``POST /v1/token``
as they expire; or a fixed bearer ``token``), keeps every revocation it reads, and
reconnects after any failure, resuming after the last event it processed (``cursor``:
persist it to resume across restarts). A token is revoked when its header's ``kid``, its
``sid``, or its ``sub`` or ``account_id`` with an ``iat`` at or before the event's
``issuedBefore`` matches a revocation (see ``Revocation`` in audit_event.proto).

Revocations made while nothing followed the feed are known only from ``cursor`` on: a
verifier started from "now" (the default) learns of none before it. ``connected`` says
whether the feed is open now, for callers that would rather fail closed without it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jwt

__all__ = ["Revoked", "Verifier"]

log = logging.getLogger(__name__)

WATCH_PATH = "/v1/events:watch"
JWKS_PATH = "/.well-known/jwks.json"
TOKEN_PATH = "/v1/token"
LEEWAY_SECONDS = 30


class Revoked(jwt.InvalidTokenError):
    """The token verifies, but an event of the feed revoked it."""


class Verifier:
    def __init__(self, base_url: str, *, audience: str, issuer: str,
                 credentials: tuple[str, str] | None = None, token: str = "",
                 cursor: str = "now", reconnect_delay: float = 1.0,
                 idle_timeout: float = 60.0, jwks_lifespan: float = 300.0) -> None:
        if (credentials is None) == (not token):
            raise ValueError("give either credentials=(client_id, client_secret) or token=")
        self.base_url = base_url.rstrip("/")
        self.audience = audience
        self.issuer = issuer
        self._credentials = credentials
        self._token = token
        self._token_until = float("inf") if token else 0.0
        self.cursor = cursor
        self._delay = reconnect_delay
        self._idle = idle_timeout
        self._jwks = jwt.PyJWKClient(self.base_url + JWKS_PATH, lifespan=int(jwks_lifespan))
        self._lock = threading.Lock()
        self._kids: set[str] = set()
        self._sids: set[str] = set()
        self._subjects: dict[str, int] = {}  # sub → tokens issued at or before are revoked
        self._accounts: dict[str, int] = {}  # account_id → the same
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        #: set once the feed has been open (``wait_connected``)
        self._opened = threading.Event()
        self.connected = False
        self._thread = threading.Thread(target=self._follow, name="verifier-feed", daemon=True)
        self._thread.start()

    # -- verifying --------------------------------------------------------------------------
    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises ``jwt.PyJWTError`` if it is not valid now (bad
        signature, unknown key, wrong audience or issuer, expired), ``Revoked`` if an
        event of the feed revoked it."""
        key = self._jwks.get_signing_key_from_jwt(token)
        header = jwt.get_unverified_header(token)
        if key.algorithm_name != header.get("alg"):
            raise jwt.InvalidAlgorithmError("the token's alg is not its key's")
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=[key.algorithm_name], audience=self.audience,
            issuer=self.issuer, leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "iat", "exp"]})
        why = self.revoked(claims, header.get("kid"))
        if why:
            raise Revoked(f"the token is revoked ({why})")
        return claims

    def revoked(self, claims: Mapping[str, Any], kid: Any = None) -> str:
        """Why the feed says a token with these claims (and header kid) is revoked, or ""."""
        iat = int(claims.get("iat", 0))
        with self._lock:
            if kid in self._kids:
                return "its signing key was retired"
            if claims.get("sid") in self._sids:
                return "its session was revoked"
            sub = self._subjects.get(str(claims.get("sub", "")))
            if sub is not None and iat <= sub:
                return "its user changed or was deleted"
            account = self._accounts.get(str(claims.get("account_id", "")))
            if account is not None and iat <= account:
                return "its account changed or was closed"
        return ""

    def wait_connected(self, timeout: float) -> bool:
        """Whether the feed opened (at least once) within ``timeout`` seconds."""
        return self._opened.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):  # wakes the feed's thread from its read
                conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    # -- the feed ---------------------------------------------------------------------------
    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._stream()
            except (OSError, ValueError, http.client.HTTPException) as e:  # reconnect
                log.info("the revocation feed ended (%s); reconnecting", e)
            finally:
                self.connected = False
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            self._stop.wait(self._delay)

    def _stream(self) -> None:
        url = urllib.parse.urlsplit(self.base_url)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        bearer = self._bearer()
        self._conn = conn = kind(url.netloc, timeout=self._idle)
        query = urllib.parse.urlencode({"cursor": self.cursor})
        conn.request("GET", f"{url.path}{WATCH_PATH}?{query}",
                     headers={"Authorization": f"Bearer {bearer}",
                              "Accept": "application/x-ndjson"})
        response = conn.getresponse()
        if response.status != 200:
            self._failed(response.read())
            return
        self.connected = True
        self._opened.set()
        for line in response:
            if self._stop.is_set():
                return
            if line.strip():
                self._line(json.loads(line))

    def _line(self, line: Mapping[str, Any]) -> None:
        if "error" in line:
            self._failed(json.dumps(line).encode())
            return
        event = line["result"]["event"]
        revocation = event.get("revocation")
        if revocation:
            before = int(datetime.fromisoformat(revocation["issuedBefore"]).timestamp())
            with self._lock:
                self._kids.update(revocation.get("keyIds", ()))
                self._sids.update(revocation.get("sessionIds", ()))
                for sub in revocation.get("subjects", ()):
                    self._subjects[sub] = max(before, self._subjects.get(sub, before))
                for account in revocation.get("accountIds", ()):
                    self._accounts[account] = max(before, self._accounts.get(account, before))
        self.cursor = event["cursor"]

    def _failed(self, body: bytes) -> None:
        """The server ended or refused the feed: an expired token of ours is replaced."""
        try:  # a Status (refused before the stream opened), or {"error": Status}
            answer = json.loads(body.splitlines()[0])
            status = answer.get("error", answer)
        except (ValueError, IndexError, AttributeError):
            status = {}
        if status.get("code") == 16 and self._credentials is not None:  # UNAUTHENTICATED
            self._token_until = 0.0
        log.warning("the revocation feed failed: %s", status.get("message") or body[:200])

    def _bearer(self) -> str:
        if time.time() < self._token_until - 30:
            return self._token
        assert self._credentials is not None
        client_id, secret = self._credentials
        form = urllib.parse.urlencode({"grant_type": "client_credentials",
                                       "client_id": client_id,
                                       "client_secret": secret}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                self.base_url + TOKEN_PATH, data=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"}),
                timeout=self._idle) as response:
            answer = json.loads(response.read())
        self._token = str(answer["access_token"])
        self._token_until = time.time() + float(answer.get("expires_in", 300))
        return self._token
