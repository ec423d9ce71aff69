"""Use cases for accounts (filled in by its issue)."""

from __future__ import annotations

from accounts_grpc.services.deps import Deps


class AccountsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
