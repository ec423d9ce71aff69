"""Use cases for partitions (filled in by its issue)."""

from __future__ import annotations

from accounts_grpc.services.deps import Deps


class PartitionsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
