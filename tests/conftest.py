"""Fixtures for every test: a moto server for the session, a fresh Dovecot per test.

The helpers behind them live in ``tests/support``; pytest puts the repository
root on ``sys.path`` (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.support.dovecot import DEFAULT_PASSWORD, DEFAULT_USER, DovecotServer, dovecot_binary
from tests.support.harness import CapturedOutput, captured_output, require
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources, MotoServer, leaky_env_names

POWERTOOLS_TEST_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Pop3IngestTest",
    "POWERTOOLS_SERVICE_NAME": "pop3-ingest",
}
# Powertools reads these when a handler module is first imported, which may be
# at collection (a test module importing the handlers): set them before that.
for _name, _value in POWERTOOLS_TEST_ENV.items():
    os.environ.setdefault(_name, _value)

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
    if dovecot_binary() is None:
        require(
            "dovecot is not installed; `make test` installs it "
            "(apt-get install dovecot-core dovecot-pop3d)"
        )
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


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Iterator[CapturedOutput]:
    """Everything the handler writes: its log handler's lines and stdout."""
    with captured_output(capsys) as captured:
        yield captured


@pytest.fixture(autouse=True)
def _clear_powertools_caches() -> Iterator[None]:
    """Powertools caches secrets per process; a test must never see another's secret."""
    from aws_lambda_powertools.utilities import parameters

    clear: Callable[[], None] = parameters.clear_caches  # untyped upstream
    clear()
    yield
    clear()
