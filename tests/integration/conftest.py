"""Fixtures running the real handler against the real Dovecot (or popa3d) and moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tests.support.aws_hooks import AwsFaults
from tests.support.dovecot import DovecotServer
from tests.support.harness import Harness, require
from tests.support.moto_server import AwsResources
from tests.support.popa3d import Popa3dMailbox, missing_requirements, popa3d_mailbox


@pytest.fixture
def harness(dovecot: DovecotServer, aws: AwsResources, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", "2")
    return Harness(dovecot=dovecot, aws=aws, monkeypatch=monkeypatch)


@pytest.fixture
def popa3d() -> Iterator[Popa3dMailbox]:
    """A popa3d mailbox on 127.0.0.1: a fresh system user with an empty mbox.

    Skipped locally, failed in CI, where popa3d cannot run (not installed, not root).
    """
    missing = missing_requirements()
    require(None if missing is None else f"{missing}; CI must run `make deps` as root")
    with popa3d_mailbox() as mailbox:
        yield mailbox


@pytest.fixture
def aws_fault() -> Iterator[Callable[..., None]]:
    """Make the handler's own S3/SQS client answer with an HTTP error.

    ``aws_fault(service, operation, status=..., code=..., when=...)``
    (:meth:`AwsFaults.install`); every fault is removed at teardown.
    """
    faults = AwsFaults()
    yield faults.install
    faults.remove_all()
