"""What a run costs in S3 calls for its state, counted on an in-memory S3.

The real run policy and the real core (over a fake POP3 mailbox, store and
queue) on the real S3 state store: Mode single reads once and writes twice
(its lease, then the save that gives it back); a run whose trigger keeps a
mailbox's runs apart (Mode fleet) reads once, and writes only what changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from tests.support.memory_s3 import FakeS3

from pop3_ingest.config import MailboxConfig
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.run import QuarantineWriter, RunOutcome, RunPorts, run_mailbox
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.domain.summary import StopReason
from pop3_ingest.integrations.s3_state import S3StateStore, Snapshot

from .fakes import FakeMailbox, FakeQueue, FakeStore, SharedUidlListing

SECRET = {"host": "pop.example.com", "username": "alice", "password": "pw", "mailbox": "box"}


def message(i: int) -> bytes:
    return f"Subject: message {i}\r\nMessage-ID: <{i}@test>\r\n\r\nbody {i}\r\n".encode()


@dataclass
class QuietObserver:
    counted: list[str] = field(default_factory=list)

    def count(self, metric: str) -> None:
        self.counted.append(metric)

    def log(self, level: int, message: str, **fields: object) -> None:
        assert level < logging.ERROR, message


@dataclass
class Mailbox:
    """One mailbox's world: its POP3 server, its stored mail and its S3 state."""

    server: FakeMailbox = field(default_factory=lambda: FakeMailbox({}))
    store: FakeStore = field(default_factory=FakeStore)
    queue: FakeQueue = field(default_factory=FakeQueue)
    s3: FakeS3 = field(default_factory=FakeS3)
    secret: dict[str, object] = field(default_factory=lambda: dict(SECRET))
    now: float = 1_800_000_000.0

    def start_core(
        self, config: MailboxConfig, state: MailboxState, on_quarantine: QuarantineWriter
    ) -> MailboxIngest:
        return MailboxIngest(
            mailbox_name=config.mailbox,
            connect=lambda: self.server,
            store=self.store,
            announcer=self.queue,
            deadline=Deadline(lambda: 600_000, margin_seconds=10),
            options=IngestOptions(delete=config.delete),
            state=state,
            on_quarantine=on_quarantine,
        )

    def run(self, *, take_lease: bool) -> tuple[RunOutcome, list[str]]:
        """One run, five minutes after the last; the S3 calls it made for its state."""
        self.now += 300
        self.s3.calls.clear()
        config = MailboxConfig.from_secret(self.secret)
        ports: RunPorts[Snapshot] = RunPorts(
            states=S3StateStore(self.s3, "bucket", "mail/"),  # type: ignore[arg-type]
            reload_secret=lambda: config,
            start_core=self.start_core,
            observer=QuietObserver(),
            seconds_left=lambda: 300.0,
            clock=lambda: self.now,
        )
        outcome = run_mailbox(
            config, ports, owner="run-1", auth_failure_limit=3, take_lease=take_lease
        )
        assert outcome.summary.stopped is StopReason.COMPLETED
        return outcome, list(self.s3.calls)


@pytest.fixture
def mailbox() -> Mailbox:
    world = Mailbox()
    world.run(take_lease=False)  # the first run writes the state it starts
    return world


def test_mode_single_reads_once_and_writes_its_lease_and_its_save(mailbox: Mailbox) -> None:
    _, calls = mailbox.run(take_lease=True)
    assert calls == ["get", "put", "put"]


def test_without_a_lease_a_run_with_nothing_new_reads_once_and_writes_nothing(
    mailbox: Mailbox,
) -> None:
    for _ in range(3):
        _, calls = mailbox.run(take_lease=False)
        assert calls == ["get"]


def test_without_a_lease_a_run_with_new_mail_writes_its_state_once(mailbox: Mailbox) -> None:
    mailbox.server.messages.update({f"u{i}": message(i) for i in range(3)})
    outcome, calls = mailbox.run(take_lease=False)
    assert outcome.summary.deleted == 3
    assert calls == ["get", "put"]
    _, calls = mailbox.run(take_lease=False)  # the mail is gone: nothing new
    assert calls == ["get"]


def test_without_a_lease_mail_kept_on_the_server_costs_no_write_once_announced() -> None:
    world = Mailbox(secret=dict(SECRET, delete=False))
    world.server.messages.update({f"u{i}": message(i) for i in range(3)})
    _, calls = world.run(take_lease=False)
    assert calls == ["get", "put"]
    _, calls = world.run(take_lease=False)
    assert calls == ["get"]
    assert len(world.queue.sent) == 3  # each announced once
    assert len(world.server.messages) == 3


def test_without_a_lease_kept_mail_known_by_its_content_costs_no_write_once_announced() -> None:
    server = SharedUidlListing({f"u{i}": message(i) for i in range(3)})
    world = Mailbox(server=server, secret=dict(SECRET, delete=False))
    world.run(take_lease=False)
    _, calls = world.run(take_lease=False)  # downloaded again, recognised by content
    assert calls == ["get"]
    assert len(world.queue.sent) == 3
