"""Use cases for groups (filled in by its issue)."""

from __future__ import annotations

from accounts_grpc.services.deps import Deps


class GroupsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
