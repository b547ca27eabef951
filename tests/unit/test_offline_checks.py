"""`make test` stays green on a machine that reaches only the package index:
nothing it runs asks an online service (the vulnerability scan is `make audit`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _planned(target: str) -> str:
    """The commands `make` would run for ``target``, without running them."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed: the project's checks run through it")
    # -B: plan every recipe, including those whose stamps are up to date.
    result = subprocess.run(
        ["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_make_test_runs_no_vulnerability_scan() -> None:
    assert "audit_dependencies" not in _planned("test")


def test_make_audit_runs_the_scan() -> None:
    assert "audit_dependencies" in _planned("audit")
