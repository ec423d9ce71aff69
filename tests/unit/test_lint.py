"""The code stays lint-clean: ruff, mypy and the import contracts (lint-imports, the
layers in pyproject.toml) run as part of the suite (buf lint is in test_buf.py, the
freshness of gen/ in test_protos.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    r = _run(str(BIN / "ruff"), "check", "src", "tests", "bench", "scripts")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean() -> None:
    r = _run(str(BIN / "mypy"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_import_contracts_are_kept() -> None:
    """The layers (cli → supervisor → app → rest → rpc → services → auth → store → domain
    → config/logs), SQLAlchemy only in the store, no transport below rpc, no cycles."""
    r = _run(str(BIN / "lint-imports"), "--no-cache")
    assert r.returncode == 0, r.stdout + r.stderr
