"""Knobs shared by the fuzz tests (tests/e2e/test_fuzz_rest.py, tests/e2e/test_fuzz_grpc.py).

- ``ACCOUNTS_FUZZ_EXAMPLES``: generated cases per operation (REST) or per RPC (gRPC).
  Small by default, so the fuzzers fit the suite; ``make fuzz`` raises it.
- ``ACCOUNTS_FUZZ_SEED``: unset or empty, the seed is fixed (0), so ``make test`` draws the
  same cases on every run; ``random`` draws a fresh seed (``make fuzz``); an integer
  replays that seed. The seed is printed with the number of cases, and each operation
  or RPC draws from its own seed derived from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

EXAMPLES_ENV = "ACCOUNTS_FUZZ_EXAMPLES"
SEED_ENV = "ACCOUNTS_FUZZ_SEED"


def examples(default: int) -> int:
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{EXAMPLES_ENV} must be at least 1, got {raw!r}")
    return value


def _seed() -> tuple[int, bool]:
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return 0, False
    if raw.lower() == "random":
        return random.SystemRandom().getrandbits(64), True
    return int(raw), True


SEED, SEED_CHOSEN = _seed()


def derived_seed(label: str) -> int:
    """The run's seed mixed with a label, so each RPC or operation draws its own cases."""
    digest = hashlib.blake2b(f"{SEED}:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def describe_seed() -> str:
    if not SEED_CHOSEN:
        return f"fixed seed {SEED} (ACCOUNTS_FUZZ_SEED=random for fresh cases)"
    return f"seed {SEED} (replay: ACCOUNTS_FUZZ_SEED={SEED})"


@dataclass
class Tally:
    """Cases run, per target, per kind of case and per outcome; printed at the end of a
    module (``pytest -s`` shows it)."""

    what: str
    targets: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    probes: int = 0

    def reset(self) -> None:
        self.targets.clear()
        self.kinds.clear()
        self.outcomes.clear()
        self.probes = 0

    def add(self, target: str, kind: str, outcome: str) -> None:
        self.targets[target] += 1
        self.kinds[kind] += 1
        self.outcomes[outcome] += 1

    def summary(self, label: str, seconds: float) -> str:
        def fmt(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))

        total = sum(self.targets.values())
        probes = f" (+{self.probes} probes)" if self.probes else ""
        return (f"\n{self.what} fuzz [{label}]: {total} cases{probes} over "
                f"{len(self.targets)} targets in {seconds:.1f} s; {describe_seed()}\n"
                f"  cases: {fmt(self.kinds)}\n  outcomes: {fmt(self.outcomes)}")


# -- data to aim at ------------------------------------------------------------------------

# Strings that have broken services like this one: NUL (PostgreSQL refuses it in text),
# control and format characters, surrogate-adjacent and astral code points, SQL and LIKE
# metacharacters, role and sort words of the API, numbers, and long strings.
NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "\x00" * 8, "\t\n\r", "\x1b[2J", "\x7f", "\u0085",
    "\u2028", "\u202e", "\ufeff", "\uffff", "é", "😀", "\U0001d518\U0001d52b", "%", "_",
    "%_%", "\\", "'", '"', "*", "' OR '1'='1", "'; DROP TABLE accounts; --", "${jndi:x}",
    "../../etc/passwd", "admin", "account-admin", "admin-reader", "consultant", "member",
    "intermediary", "consultancy", "name desc", "create_time desc", "name,email",
    "id asc, name desc", "USER_KIND_MACHINE", "true", "-1", "0", "9" * 40, "NaN", "a" * 255,
    "a" * 256, "x" * 5000,
]
EDGE_INTEGERS = [0, 1, -1, 50, 1000, 1001, 2**31 - 1, -(2**31), 2**31, 2**32, 2**53 + 1,
                 2**63 - 1, -(2**63), 2**64]

# RPCs that destroy what they are given: they get a tenant of their own to destroy, so
# the rest of a run still finds the other one.
DESTRUCTIVE = frozenset({"CloseAccount", "DeleteUser", "DeleteUserGroup", "DeletePartition",
                         "RevokeSession"})


@dataclass
class Seeded:
    """Two tenants made through the public API (REST): ``kept`` for every RPC, ``doomed``
    for the destructive ones. Each maps a kind of value ("account", "user", "external",
    "group", "partition", "session", "device", "meter", "client", "order", "email") to
    the values of that kind."""

    kept: dict[str, list[str]] = field(default_factory=dict)
    doomed: dict[str, list[str]] = field(default_factory=dict)

    def fill(self, http: httpx.Client) -> None:
        self.kept, self.doomed = _tenant(http, "kept"), _tenant(http, "doomed")

    def clear(self) -> None:
        self.kept, self.doomed = {}, {}

    def of(self, rpc: str, kind: str) -> list[str]:
        """Values of a kind for an RPC (by its method name) to use."""
        return (self.doomed if rpc in DESTRUCTIVE else self.kept).get(kind, [])

    def all(self, rpc: str) -> list[str]:
        source = self.doomed if rpc in DESTRUCTIVE else self.kept
        return sorted({v for values in source.values() for v in values})


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, f"seeding: {r.request.method} {r.request.url}: {r.text}"
    body = r.json()
    assert isinstance(body, dict)
    return body


def _tenant(http: httpx.Client, tag: str) -> dict[str, list[str]]:
    """An intermediary account with a human admin, an external and a machine user, a
    group, a partition with two devices, a device permission, an order and a session."""
    suffix = uuid.uuid4().hex[:8]
    email = f"fuzz-{tag}-{suffix}@example.com"
    created = _ok(http.post("/v1/accounts", json={
        "account": {"name": f"Fuzz {tag} {suffix}", "email": email, "roles": ["intermediary"]},
        "firstUser": {"kind": "USER_KIND_HUMAN", "email": f"admin.{email}",
                      "firstName": "Ada", "lastName": "Admin"}}))
    account_id = created["account"]["id"]
    external_id = f"ext-{suffix}"
    external = _ok(http.post(f"/v1/accounts/{account_id}/users", json={
        "kind": "USER_KIND_EXTERNAL", "externalId": external_id}))["user"]
    machine = _ok(http.post(f"/v1/accounts/{account_id}/users", json={
        "kind": "USER_KIND_MACHINE", "roles": ["member"]}))["user"]
    group = _ok(http.post(f"/v1/accounts/{account_id}/userGroups", json={
        "name": f"group {tag}", "roles": ["member"]}))["userGroup"]
    _ok(http.post(f"/v1/userGroups/{group['id']}:addMembers",
                  json={"userIds": [created["firstUser"]["id"]]}))
    partition = _ok(http.post(f"/v1/accounts/{account_id}/partitions",
                              json={"name": f"partition {tag}"}))["partition"]
    device, meter = suffix.upper(), f"MTR-{suffix}"
    _ok(http.post(f"/v1/partitions/{partition['id']}/devices:register", json={
        "devices": [{"deviceId": device, "name": "charger"}, {"meterId": meter}]}))
    _ok(http.post(f"/v1/users/{external['id']}/devicePermissions:add",
                  json={"devices": [{"deviceId": device}]}))
    order_id = f"order-{suffix}"
    _ok(http.post(f"/v1/accounts/{account_id}/externalUsers/{external_id}/orders", json={
        "order": {"orderId": order_id, "status": "ORDER_STATUS_RECEIVED"}}))
    session = _ok(http.post("/v1/sessions", json={"user": {"userId": external["id"]}}))
    return {
        "account": [account_id],
        "user": [created["firstUser"]["id"], external["id"], machine["id"]],
        "external": [external_id],
        "group": [group["id"]],
        "partition": [partition["id"]],
        "session": [session["session"]["id"]],
        "device": [device],
        "meter": [meter],
        "client": [machine["clientId"]],
        "order": [order_id],
        "email": [email, f"admin.{email}"],
    }


@contextlib.contextmanager
def seeded_run(http_url: str, admin_token: str, backend: str, seeded: Seeded,
               tally: Tally) -> Iterator[None]:
    """A fuzz module's run: two tenants seeded through the public API, the tally reset,
    and its summary printed at the end."""
    with httpx.Client(base_url=http_url, timeout=30,
                      headers={"authorization": f"Bearer {admin_token}"}) as http:
        seeded.fill(http)
    tally.reset()
    started = time.monotonic()
    try:
        yield
    finally:
        print(tally.summary(backend, time.monotonic() - started))
        seeded.clear()
