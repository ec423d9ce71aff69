"""Input checks shared by every use case."""

from __future__ import annotations

import pytest

from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.domain.validate import Validator, check_id, is_uuid


def bad(check: str, value: str, **kw: object) -> list[str]:
    v = Validator()
    getattr(v, check)("f", value, **kw)
    return [x.description for x in v.violations]


@pytest.mark.parametrize("email", ["a@b.co", "First.Last+tag@sub.example.org", "x@localhost.io"])
def test_good_emails(email: str) -> None:
    assert bad("email", email) == []


@pytest.mark.parametrize(
    "email",
    ["", "plain", "a@", "@b.co", "a@b", "a b@c.io", "a@b..co", "a@-b.co", "a@b.co\nx",
     "x" * 320 + "@b.co", "a@b_c.io", "<a@b.co>"],
)
def test_bad_emails(email: str) -> None:
    assert bad("email", email)


def test_trailing_newline_is_stripped_from_email() -> None:
    v = Validator()
    assert v.email("f", "a@b.co\n") == "a@b.co" and not v.violations


@pytest.mark.parametrize("colour", ["#000000", "#aBcDeF", "#123abc", ""])
def test_good_colours(colour: str) -> None:
    assert bad("color", colour) == []


@pytest.mark.parametrize("colour", ["red", "#abc", "#abcdefa", "abcdef", "#ggg000", "#abcdef\n",
                                    " #abcdef", "#ABCDEF "])
def test_bad_colours(colour: str) -> None:
    assert bad("color", colour) == [f"{colour!r} is not a colour of the form #RRGGBB"]


def test_colours_are_stored_lower_case() -> None:
    assert Validator().color("f", "#ABCDEF") == "#abcdef"


@pytest.mark.parametrize("url", ["https://a.io/logo.png", "http://localhost:8080/x?y=1", ""])
def test_good_urls(url: str) -> None:
    assert bad("url", url) == []


@pytest.mark.parametrize("url", ["logo.png", "ftp://a.io/x", "javascript:alert(1)", "https://",
                                 "http://a b.io", "https://a.io/\x00", "http://[::1", "x" * 3000])
def test_bad_urls(url: str) -> None:
    assert bad("url", url)


def test_names() -> None:
    assert bad("name", "") == ["is required"]
    assert bad("name", "   ") == ["is required"]
    assert bad("name", "", required=False) == []
    assert bad("name", "x" * 200) == []
    assert bad("name", "x" * 201) == ["must be at most 200 characters (got 201)"]
    assert bad("name", "a\nb") == ["must not contain control characters"]
    assert bad("name", "a\x85b") == ["must not contain control characters"]  # C1 (NEL)
    assert bad("name", "Zürich \u2013 Café") == []
    assert Validator().name("f", "  Acme  ") == "Acme"


def test_huge_values_are_not_echoed() -> None:
    desc = bad("name", "x" * 3_000_000)[0]
    assert len(desc) < 100
    desc = bad("email", "y" * 3_000_000)[0]
    assert len(desc) < 200


def test_ids() -> None:
    good = "0b5f7c1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
    assert is_uuid(good) and check_id("id", good) == good
    for value in ["", "abc", good[:-1], good + "0", "{" + good + "}", good.replace("-", "")]:
        assert not is_uuid(value)
    with pytest.raises(InvalidArgument) as info:
        check_id("id", "abc")
    assert info.value.reason == "INVALID_ID" and info.value.violations[0].field == "id"
    with pytest.raises(InvalidArgument) as info:
        check_id("id", "")
    assert info.value.reason == "INVALID_ARGUMENT"


def test_violations_are_collected() -> None:
    v = Validator()
    v.name("a.name", "")
    v.email("a.email", "nope")
    v.color("a.primary_color", "red")
    with pytest.raises(InvalidArgument) as info:
        v.raise_if_any()
    assert [x.field for x in info.value.violations] == ["a.name", "a.email", "a.primary_color"]
    assert "(and 2 more)" in info.value.message
