"""Fixtures running the real handler against the scripted fake POP3 server and moto.

Each hostile case ends with :meth:`HostileHarness.check` (tests/support/harness.py):
no crash (a summary, or one of the package's own errors), and nothing the
server deleted at QUIT that is not stored byte for byte in S3.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator

import pytest
from tests.support.aws_hooks import MARGIN, Ledger, PointerTap, SlowAws
from tests.support.harness import CapturedOutput, HostileHarness, repair_log_stream
from tests.support.moto_server import AwsResources, MotoServer

# Messages bigger than this are streamed in the ``small_streams`` tests: the
# streaming path without 8 MiB messages (kept single-part, under S3's 5 MiB
# minimum part size).
SMALL_STREAM_THRESHOLD = 64 * 1024


@pytest.fixture(autouse=True)
def _usable_log_stream(moto: MotoServer) -> Iterator[None]:
    """The handler's log handler never writes to a closed capsys stream (after ``moto``
    has set the Powertools environment the handler's import reads)."""
    repair_log_stream()
    yield
    repair_log_stream()


@pytest.fixture
def hostile(
    aws: AwsResources, monkeypatch: pytest.MonkeyPatch, output: CapturedOutput
) -> Iterator[HostileHarness]:
    monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", "2")
    monkeypatch.setenv("POP3_TIMEOUT_SECONDS", "2")
    harness = HostileHarness(aws=aws, monkeypatch=monkeypatch, output=output)
    yield harness
    harness.close()


@pytest.fixture
def slow_aws(hostile: HostileHarness) -> Iterator[SlowAws]:
    """S3 and SQS (the handler's own clients) that a test can make slow mid-run.

    The hooks are removed, and the core's worker threads given time to stop, at teardown.
    """
    hostile.monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", str(MARGIN))
    slow = SlowAws()
    slow.install()
    yield slow
    slow.uninstall()


@pytest.fixture
def ledger(hostile: HostileHarness) -> Iterator[Ledger]:
    """What the handler announced, from the first run on."""
    tap = PointerTap()
    tap.install()
    yield Ledger(hostile.aws, tap)
    tap.uninstall()


@pytest.fixture
def small_streams(monkeypatch: pytest.MonkeyPatch) -> int:
    """The handler streams messages above :data:`SMALL_STREAM_THRESHOLD` (no setting exists).

    The options class gets that default wherever the package refers to it by name.
    """
    import pop3_ingest.handlers.fetch  # noqa: F401  (loads every module the handler uses)
    from pop3_ingest.domain.options import IngestOptions

    @dataclasses.dataclass(frozen=True)
    class SmallStreams(IngestOptions):
        stream_threshold: int = SMALL_STREAM_THRESHOLD

    users = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("pop3_ingest.")
        and getattr(module, "IngestOptions", None) is IngestOptions
    ]
    assert users, "nothing in pop3_ingest builds IngestOptions by name any more"
    for module in users:
        monkeypatch.setattr(module, "IngestOptions", SmallStreams)
    return SMALL_STREAM_THRESHOLD
