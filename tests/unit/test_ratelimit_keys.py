"""The attempt limiter's policy without a database: which counters an attempt has, and
the bound each one gets (0: that counter is off; auth_max_failures = 0: all are)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from accounts_grpc.config import Settings, SettingsError
from accounts_grpc.services.ratelimit import FailureLimiter
from accounts_grpc.store.db import Database

keys = FailureLimiter.keys


def limiter(**settings: Any) -> FailureLimiter:
    return FailureLimiter(cast(Database, None), Settings(**settings))  # never reaches the db


def test_an_attempt_counts_on_the_pair_the_address_and_the_client() -> None:
    assert keys("cid_1", "10.0.0.1") == ["addr:10.0.0.1", "client:cid_1", "pair:cid_1@10.0.0.1"]


def test_without_a_client_id_only_the_address_counts() -> None:
    assert keys("", "10.0.0.1") == ["addr:10.0.0.1"]
    assert keys("", None) == []


def test_without_an_address_the_client_counts_and_so_does_the_pair_at_no_address() -> None:
    assert keys("cid_1", None) == ["client:cid_1", "pair:cid_1@"]


def test_ipv6_addresses_are_kept_readable() -> None:
    assert "pair:cid_1@2001:db8::1" in keys("cid_1", "2001:db8::1")


def test_long_or_unprintable_values_are_hashed_to_fit_the_key_column() -> None:
    for client_id in ("x" * 5000, "a\nb"):
        out = keys(client_id, "10.0.0.1")
        assert [k.split("#")[0] for k in out if "#" in k] == ["client", "pair"], out
        assert all(len(k) <= 128 for k in out)


def test_the_pair_is_unambiguous() -> None:
    """``<client>@<address>`` splits at its last "@": an "@" in an address is escaped, so
    a client id with an "@" cannot name another client's pair."""
    assert keys("a@b", "c")[-1] != keys("a", "b@c")[-1]
    assert keys("a", "b@c")[-1] == "pair:a@b%40c"
    assert keys("a", "b%40c")[-1] == "pair:a@b%2540c"


def test_each_counter_gets_its_own_bound() -> None:
    lim = limiter(auth_max_failures=3, auth_max_failures_per_address=7,
                  auth_max_failures_per_client=9)
    assert lim.enabled
    assert lim.limits(keys("cid_1", "10.0.0.1")) == {
        "pair:cid_1@10.0.0.1": 3, "addr:10.0.0.1": 7, "client:cid_1": 9,
    }
    assert lim.limits(keys("x" * 500, "10.0.0.1")) == {
        k: {"pair": 3, "addr": 7, "client": 9}[k.split("#")[0].split(":")[0]]
        for k in keys("x" * 500, "10.0.0.1")
    }


def test_the_defaults() -> None:
    assert limiter().limits(keys("cid_1", "10.0.0.1")) == {
        "pair:cid_1@10.0.0.1": 10, "addr:10.0.0.1": 100, "client:cid_1": 100,
    }


@pytest.mark.parametrize(("setting", "off"), [
    ("auth_max_failures_per_address", "addr:10.0.0.1"),
    ("auth_max_failures_per_client", "client:cid_1"),
])
def test_a_bound_of_zero_turns_its_counter_off(setting: str, off: str) -> None:
    lim = limiter(**{setting: 0})
    got = lim.limits(keys("cid_1", "10.0.0.1"))
    assert off not in got and len(got) == 2
    assert lim.enabled


def test_auth_max_failures_zero_turns_the_limiter_off() -> None:
    lim = limiter(auth_max_failures=0)
    assert not lim.enabled
    assert lim.limits(keys("cid_1", "10.0.0.1")) == {}


def test_a_key_of_no_known_kind_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not a rate-limit key"):
        limiter().limits(["user:1"])


@pytest.mark.parametrize("setting", [
    "auth_max_failures", "auth_max_failures_per_address", "auth_max_failures_per_client",
])
def test_bounds_cannot_be_negative(setting: str) -> None:
    with pytest.raises(SettingsError, match=setting):
        Settings(**{setting: -1})
    assert getattr(Settings(**{setting: 0}), setting) == 0
