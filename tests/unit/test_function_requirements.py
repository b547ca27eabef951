"""The function's one third-party requirement (cryptography, for certificate credentials):
pinned as the tests ran it, shipped by `sam build`, and loaded only when used."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from scripts import check_artifact

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTION_REQUIREMENTS = REPO_ROOT / "functions" / "requirements.txt"
LOCK = REPO_ROOT / "requirements.lock"


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_the_function_ships_the_versions_the_tests_ran() -> None:
    shipped, locked = pins(FUNCTION_REQUIREMENTS), pins(LOCK)
    assert "cryptography" in shipped
    assert {name: locked.get(name) for name in shipped} == shipped


def test_cryptography_is_a_dependency_of_the_project() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("cryptography") for dep in project["dependencies"])


# What the artifact lacks (pyOpenSSL, which botocore would load cryptography through
# in this venv) is hidden, so the import below sees what the deployed function sees.
_PROBE = """
import sys
sys.modules["OpenSSL"] = None
import pop3_ingest.handlers.fetch, pop3_ingest.handlers.reconcile
print("cryptography" in sys.modules)
from pop3_ingest.config import OAuthSettings
from pop3_ingest.integrations.oauth_tokens import token_request_form
settings = OAuthSettings.from_secret({
    "token_url": "https://login.example.com/t", "client_id": "app", "scope": "s",
    "client_assertion": {"private_key_pem": sys.stdin.read(), "x5t#S256": "A" * 43},
})
token_request_form(settings)
print("cryptography" in sys.modules)
"""


def test_cryptography_is_imported_only_for_a_certificate_credential() -> None:
    from tests.support.oauth_certificate import app_certificate

    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        input=app_certificate().private_key_pem,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert probe.stdout.split() == ["False", "True"]


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    """A built function as SAM lays it out: the package, its requirements installed."""
    for part in check_artifact.MUST_HOLD:
        (tmp_path / "pop3_ingest" / part).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pop3_ingest" / part).touch()
    (tmp_path / "requirements.txt").touch()
    for name, version in pins(FUNCTION_REQUIREMENTS).items():
        install(tmp_path, name, version)
    return tmp_path


def install(artifact: Path, name: str, version: str) -> None:
    info = artifact / f"{name}-{version}.dist-info"
    info.mkdir()
    (artifact / name).mkdir()
    (artifact / name / "__init__.py").touch()
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/RECORD,,\n")


def test_the_artifact_check_takes_exactly_the_declared_requirements(artifact: Path) -> None:
    assert check_artifact.problems(artifact) == []
    install(artifact, "six", "1.17.0")
    assert [p for p in check_artifact.problems(artifact) if "six" in p]


def test_the_artifact_check_misses_no_declared_requirement(artifact: Path) -> None:
    for path in artifact.glob("cffi*"):
        for child in sorted(path.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        path.rmdir()
    assert check_artifact.problems(artifact) == [f"{artifact}: cffi from requirements.txt missing"]
