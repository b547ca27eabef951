"""Shared fixtures: a moto server for the whole session, a fresh Dovecot per test.

Nothing here imports ``pop3_ingest``: the fixtures work before the package does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# `tests.support` and the package under functions/ import however pytest is launched
# (plain `pytest` does not put the repo root on sys.path).
for _path in (REPO_ROOT / "functions", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.support.dovecot import (  # noqa: E402
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    DovecotServer,
    dovecot_binary,
)
from tests.support.lambda_context import FakeLambdaContext  # noqa: E402
from tests.support.moto_server import AwsResources, MotoServer, leaky_env_names  # noqa: E402

POWERTOOLS_TEST_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Pop3IngestTest",
    "POWERTOOLS_SERVICE_NAME": "pop3-ingest",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _require_dovecot() -> None:
    """Skip locally, fail in CI: there a missing Dovecot is a broken pipeline."""
    if dovecot_binary() is not None:
        return
    message = (
        "dovecot is not installed; `make test` installs it "
        "(apt-get install dovecot-core dovecot-pop3d)"
    )
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# -- AWS (moto) ---------------------------------------------------------------


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server for the session; AWS and Powertools env vars point at it."""
    with MotoServer() as server, pytest.MonkeyPatch.context() as mp:
        for name in leaky_env_names(os.environ):
            mp.delenv(name)
        for name, value in {**server.aws_env(), **POWERTOOLS_TEST_ENV}.items():
            mp.setenv(name, value)
        yield server


@pytest.fixture
def aws(moto: MotoServer) -> AwsResources:
    """Empty moto state plus bucket ``mail-bucket`` and queue ``mail-queue``."""
    moto.reset()
    return moto.provision(bucket="mail-bucket", queue="mail-queue")


# -- Dovecot -------------------------------------------------------------------


@pytest.fixture
def make_dovecot() -> Iterator[Callable[..., DovecotServer]]:
    """Factory for started servers with custom options (``DovecotServer`` kwargs).

    Every server it made is stopped, its processes gone, at teardown.
    """
    _require_dovecot()
    servers: list[DovecotServer] = []

    def factory(**options: Any) -> DovecotServer:
        server = DovecotServer(**options)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.close()


@pytest.fixture
def dovecot(make_dovecot: Callable[..., DovecotServer]) -> DovecotServer:
    """A fresh default server (STLS offered, no session lock) with user DEFAULT_USER.

    Start-up takes ~0.1 s, so every test gets its own instance.
    """
    server = make_dovecot()
    server.add_user(DEFAULT_USER, DEFAULT_PASSWORD)
    return server


# -- Lambda --------------------------------------------------------------------


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext(remaining_ms=300_000)


@pytest.fixture(autouse=True)
def _clear_powertools_caches() -> Iterator[None]:
    """Powertools caches secrets per process; a test must never see another's secret."""
    try:
        from aws_lambda_powertools.utilities import parameters
    except ImportError:
        yield
        return
    clear: Callable[[], None] = parameters.clear_caches  # untyped upstream
    clear()
    yield
    clear()
