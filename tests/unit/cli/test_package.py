"""How operators install and start the CLI: the wheel (pipx, uv tool), ``python -m pop3_ingest``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
_BUILD_INPUTS = ("pyproject.toml", "README.md", "functions", "cli")


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from a copy of its sources, offline (this venv's setuptools)."""
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in _BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "-q", "-w", str(out)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("pop3_ingest-*.whl")
    return wheel


def test_the_wheel_installs_the_pop3_ingest_command(tmp_path: Path) -> None:
    # What `pipx install .` and `uv tool install .` install: this wheel.
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
    assert "[console_scripts]" in scripts
    assert "pop3-ingest = pop3_ingest_cli.main:main" in scripts
    for module in ("main", "status", "resume", "run", "quarantine", "__main__"):
        assert f"pop3_ingest_cli/{module}.py" in names
    assert "pop3_ingest/__main__.py" in names
    assert "pop3_ingest/handlers/fetch.py" in names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "benchmarks/"))]


def run_module(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_python_dash_m_pop3_ingest_is_the_cli(tmp_path: Path) -> None:
    paths = os.pathsep.join(str(REPO_ROOT / tree) for tree in ("functions", "cli"))
    env = {**os.environ, "PYTHONPATH": paths}
    shown = run_module("-m", "pop3_ingest", "--help", env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: pop3-ingest")
    for name in ("status", "resume", "run"):
        assert name in shown.stdout
    refused = run_module("-m", "pop3_ingest", "status", env=env)
    assert refused.returncode == 2
    assert "--bucket or --stack-name is required" in refused.stderr


def test_python_dash_m_pop3_ingest_without_the_cli_says_how_to_install_it() -> None:
    # No site-packages (-S), only the Lambda package on the path: as in the artifact.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "functions")}
    missing = run_module("-S", "-m", "pop3_ingest", "--help", env=env)
    assert missing.returncode == 2
    assert "not installed" in missing.stderr
    assert "pipx install ." in missing.stderr
    assert "uv tool install ." in missing.stderr
    assert "Traceback" not in missing.stderr
