"""The real ports of a run: the AWS clients and adapters, and the core over a POP3 session.

Clients are created on first use (never at import) and reused across warm
invocations; everything else is built per run from the settings and the
Lambda context's deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from pop3_ingest.config import MailboxConfig, Settings
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.ports import StateStore
from pop3_ingest.domain.run import CoreFactory, QuarantineWriter, RunPorts
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.handlers.observability import PowertoolsObserver, count
from pop3_ingest.integrations.s3_state import STATE_CLIENT_CONFIG, S3StateStore, Snapshot
from pop3_ingest.integrations.s3_store import S3MessageStore
from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer
from pop3_ingest.netguard import AddressPolicy
from pop3_ingest.pop3 import Pop3Mailbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# Standard retries with bounded timeouts: a throttled or flaky call is retried
# by the SDK; a dead endpoint fails the message instead of hanging the run.
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=30,
    # Shared by the runs of one invocation (JOB_CONCURRENCY in Mode fleet): room
    # for each one's uploads and state calls without dropping connections.
    max_pool_connections=32,
)

# Time the handler needs after its last state write: the report and the metrics
# (local work, milliseconds). The deadline margin has to cover the rest.
_REPORT_SECONDS = 0.25


@dataclass(frozen=True)
class AwsClients:
    s3: S3Client
    # Without the mail store's conditional-write hook, and with short timeouts
    # and few retries: a state write must fit in what is left of the run.
    s3_state: S3Client
    sqs: SQSClient


@cache
def aws_clients() -> AwsClients:
    """Created on first use, then reused across warm invocations."""
    session = boto3.session.Session()
    return AwsClients(
        s3=session.client("s3", config=_BOTO_CONFIG),
        s3_state=session.client("s3", config=_BOTO_CONFIG.merge(STATE_CLIENT_CONFIG)),
        sqs=session.client("sqs", config=_BOTO_CONFIG),
    )


@cache
def message_store(bucket: str) -> S3MessageStore:
    return S3MessageStore(aws_clients().s3, bucket)


def state_store(settings: Settings, context: LambdaContext) -> S3StateStore:
    """The mailboxes' run state; no call waits past what the invocation has left."""
    return S3StateStore(
        aws_clients().s3_state,
        settings.bucket,
        settings.key_prefix,
        time_left=lambda: _seconds_left(context) - _REPORT_SECONDS,
        on_damaged=lambda _: count("StateDamaged"),
    )


def run_ports(
    settings: Settings,
    context: LambdaContext,
    reload_secret: Callable[[], MailboxConfig],
    *,
    states: StateStore[Snapshot] | None = None,
    side_by_side: int = 1,
) -> RunPorts[Snapshot]:
    """Everything one run reaches outside itself, for this invocation.

    ``states``: the state store, when the caller has read the state already
    (:class:`ReadAhead`). ``side_by_side``: how many runs this invocation works
    at once; they share its memory, its disk and its upload threads.
    """
    return RunPorts(
        states=states or state_store(settings, context),
        reload_secret=reload_secret,
        start_core=core_factory(settings, context, side_by_side),
        observer=PowertoolsObserver(),
        seconds_left=lambda: _seconds_left(context),
    )


@dataclass
class ReadAhead:
    """A state store whose first read is one the caller made already (a job's stale
    check), so a run reads its mailbox's state once."""

    store: StateStore[Snapshot]
    first: Snapshot | None

    def read(self, mailbox: str) -> Snapshot:
        first, self.first = self.first, None
        return self.store.read(mailbox) if first is None else first

    def take_lease(
        self, mailbox: str, owner: str, until: float, now: float, current: Snapshot
    ) -> Snapshot | None:
        return self.store.take_lease(mailbox, owner, until, now, current)

    def write(self, mailbox: str, state: MailboxState, base: Snapshot) -> Snapshot:
        return self.store.write(mailbox, state, base)

    def put_quarantine_record(self, mailbox: str, digest: str, record: dict[str, Any]) -> None:
        self.store.put_quarantine_record(mailbox, digest, record)


def _seconds_left(context: LambdaContext) -> float:
    return context.get_remaining_time_in_millis() / 1000


def ingest_options(settings: Settings, config: MailboxConfig, side_by_side: int) -> IngestOptions:
    """One run's options; runs side by side share what one run may hold in memory and
    spool to /tmp, and its upload threads (each keeps two)."""
    options = IngestOptions.from_settings(settings, config)
    if side_by_side <= 1:
        return options
    return replace(
        options,
        memory_budget=options.memory_budget // side_by_side,
        spool_budget=options.spool_budget // side_by_side,
        upload_workers=max(2, options.upload_workers // side_by_side),
    )


def core_factory(settings: Settings, context: LambdaContext, side_by_side: int = 1) -> CoreFactory:
    """The session engine over a real POP3 session, S3 and SQS."""

    def start(
        config: MailboxConfig, state: MailboxState, on_quarantine: QuarantineWriter
    ) -> MailboxIngest:
        return MailboxIngest(
            mailbox_name=config.mailbox,
            connect=lambda: Pop3Mailbox(
                config,
                timeout=settings.pop3_timeout_seconds,
                connect_timeout=settings.connect_timeout_seconds,
                min_bytes_per_second=settings.min_transfer_bytes_per_second,
                # A read still going when half the margin is left is cut off, so
                # the run ends (and reports) before Lambda stops it.
                time_left=lambda: (
                    context.get_remaining_time_in_millis() / 1000
                    - settings.deadline_margin_seconds / 2
                ),
                address_policy=AddressPolicy(allow_private=settings.allow_private_hosts),
            ),
            store=message_store(settings.bucket),
            announcer=SqsAnnouncer(aws_clients().sqs, settings.queue_url),
            deadline=Deadline(
                context.get_remaining_time_in_millis, settings.deadline_margin_seconds
            ),
            options=ingest_options(settings, config, side_by_side),
            state=state,
            on_quarantine=on_quarantine,
        )

    return start
