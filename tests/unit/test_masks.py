"""Update masks as API.md pins them (AIP-134)."""

from __future__ import annotations

import pytest

from accounts_grpc.domain.errors import InvalidArgument, PermissionDenied
from accounts_grpc.domain.masks import require_paths_allowed, resolve_mask

UPDATABLE = {"name", "email", "roles", "primary_color"}
OUTPUT_ONLY = {"id", "create_time", "closed"}


def resolve(paths: list[str], populated: list[str], **kw: object) -> list[str]:
    return resolve_mask("account", paths, populated, updatable=UPDATABLE,
                        output_only=OUTPUT_ONLY, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("star", [[], ["*"], [" * "], [""]])
def test_no_mask_or_star_means_populated_fields(star: list[str]) -> None:
    assert resolve(star, ["name", "email", "id", "etag"]) == ["email", "name"]


def test_explicit_mask_may_clear_unpopulated_fields() -> None:
    assert resolve(["primary_color"], ["name"]) == ["primary_color"]
    assert resolve(["primaryColor", "name", "name"], []) == ["name", "primary_color"]


def test_populated_output_only_without_mask_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve([], ["name", "create_time"])
    assert info.value.reason == "FIELD_NOT_UPDATABLE"
    assert [v.field for v in info.value.violations] == ["account.create_time"]


def test_unchanged_output_only_fields_are_no_request() -> None:
    assert resolve([], ["name", "create_time", "closed"],
                   unchanged=["create_time", "closed"]) == ["name"]
    assert resolve([], ["name", "roles"], unchanged=["roles", "name"]) == []


def test_unchanged_does_not_excuse_an_explicit_mask() -> None:
    with pytest.raises(InvalidArgument):
        resolve(["create_time"], ["create_time"], unchanged=["create_time"])


@pytest.mark.parametrize(
    ("paths", "field", "says"),
    [
        (["create_time"], "update_mask.paths[0]", "output-only"),
        (["name", "id"], "update_mask.paths[1]", "output-only"),
        (["etag"], "update_mask.paths[0]", "output-only"),
        (["colour"], "update_mask.paths[0]", "not a field"),
        (["account.name"], "update_mask.paths[0]", "relative to account"),
        (["name", "*"], "update_mask.paths[1]", "only path"),
    ],
)
def test_bad_masks(paths: list[str], field: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve(paths, [])
    e = info.value
    assert e.reason == "INVALID_UPDATE_MASK"
    assert e.violations[0].field == field and says in e.violations[0].description


def test_paths_beyond_rights_are_permission_denied() -> None:
    require_paths_allowed(["name"], {"name", "email"})
    with pytest.raises(PermissionDenied) as info:
        require_paths_allowed(["name", "roles"], {"name"})
    assert info.value.reason == "FIELD_PERMISSION_DENIED"
    assert info.value.metadata == {"fields": "roles"}
