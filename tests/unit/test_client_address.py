"""Which address a call is from (rpc/pipeline.client_address): X-Forwarded-For is
believed only as far as trusted proxies wrote it."""

from __future__ import annotations

import ipaddress

import pytest

from accounts_grpc.config import Settings
from accounts_grpc.rpc.pipeline import client_address

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(("peer", "xff", "trusted", "want"), [
    # no proxies configured: the header is ignored, whoever sent it
    ("10.0.0.1", "203.0.113.7", [], "10.0.0.1"),
    # a peer that is not a trusted proxy: ignored too (a client cannot choose its address)
    ("198.51.100.1", "203.0.113.7", TRUSTED, "198.51.100.1"),
    # one proxy: the address it appended
    ("10.0.0.1", "203.0.113.7", TRUSTED, "203.0.113.7"),
    # two proxies: walk right to left past the trusted ones
    ("10.0.0.1", "203.0.113.7, 10.0.0.2", TRUSTED, "203.0.113.7"),
    # what the client wrote left of the first proxy's entry is not believed
    ("10.0.0.1", "6.6.6.6, 203.0.113.7", TRUSTED, "203.0.113.7"),
    ("10.0.0.1", "6.6.6.6,203.0.113.7,10.0.0.9", TRUSTED, "203.0.113.7"),
    # every hop a proxy: the leftmost
    ("10.0.0.1", "10.0.0.3, 10.0.0.2", TRUSTED, "10.0.0.3"),
    # garbage where an address should be: the last one believed
    ("10.0.0.1", "203.0.113.7, not-an-ip", TRUSTED, "10.0.0.1"),
    ("10.0.0.1", "unknown, 203.0.113.7", TRUSTED, "203.0.113.7"),
    # ports and IPv6 spellings
    ("10.0.0.1", "203.0.113.7:5555", TRUSTED, "203.0.113.7"),
    ("::1", "[2001:db8::7]:443", TRUSTED, "2001:db8::7"),
    ("::1", "2001:db8::7", TRUSTED, "2001:db8::7"),
    # no header
    ("10.0.0.1", None, TRUSTED, "10.0.0.1"),
    ("10.0.0.1", "", TRUSTED, "10.0.0.1"),
])
def test_client_address(peer: str, xff: str | None, trusted: list, want: str) -> None:
    assert client_address(peer, xff, trusted) == want


def test_trusted_proxies_setting() -> None:
    nets = Settings(trusted_proxies=" 10.0.0.0/8, 192.0.2.1 ,::1").proxy_networks()
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]
    assert Settings().proxy_networks() == ()
    with pytest.raises(SystemExit, match="trusted_proxies"):
        Settings.load(env={"ACCOUNTS_TRUSTED_PROXIES": "10.0.0.0/8, nonsense"})
