"""The committed openapi.json passes Redocly's recommended rules with no problem at all:
no error and no warning (error responses described, no unused components ...).

Redocly CLI comes from npm (package.json; ``make test`` installs it) and lints offline.
With no redocly.yaml in the repository it applies its built-in ``recommended`` ruleset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REDOCLY = ROOT / "node_modules" / ".bin" / "redocly"


def test_redocly_lint_finds_no_problem() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    assert REDOCLY.exists(), "Redocly CLI is missing: run `npm install` (make test does)"
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    out = subprocess.run([str(REDOCLY), "lint", "openapi.json", "--format=json"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        pytest.fail(f"redocly printed no JSON report (exit {out.returncode}):\n"
                    f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    problems = [f"{p['severity']} {p['ruleId']}: {p['message']} at "
                f"{p['location'][0].get('pointer', '?')}" for p in report["problems"]]
    assert problems == [], "\n".join(problems[:50])
    assert report["totals"]["errors"] == report["totals"]["warnings"] == 0, report["totals"]
    assert out.returncode == 0, out.stderr[-2000:]
