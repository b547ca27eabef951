"""The real ports of a run: the AWS clients and adapters, and the core over a POP3 session.

Clients are created on first use (never at import) and reused across warm
invocations; everything else is built per run from the settings and the
Lambda context's deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from pop3_ingest.config import MailboxConfig, Settings
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.run import CoreFactory, QuarantineWriter, RunPorts
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.handlers.observability import PowertoolsObserver, count
from pop3_ingest.integrations.s3_state import STATE_CLIENT_CONFIG, S3StateStore, Snapshot
from pop3_ingest.integrations.s3_store import S3MessageStore
from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer
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
    max_pool_connections=16,
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


def run_ports(
    settings: Settings, context: LambdaContext, reload_secret: Callable[[], MailboxConfig]
) -> RunPorts[Snapshot]:
    """Everything one run reaches outside itself, for this invocation."""

    def seconds_left() -> float:
        return context.get_remaining_time_in_millis() / 1000

    states = S3StateStore(
        aws_clients().s3_state,
        settings.bucket,
        settings.key_prefix,
        time_left=lambda: seconds_left() - _REPORT_SECONDS,
        on_damaged=lambda _: count("StateDamaged"),
    )
    return RunPorts(
        states=states,
        reload_secret=reload_secret,
        start_core=core_factory(settings, context),
        observer=PowertoolsObserver(),
        seconds_left=seconds_left,
    )


def core_factory(settings: Settings, context: LambdaContext) -> CoreFactory:
    """The session engine over a real POP3 session, S3 and SQS."""

    def start(
        config: MailboxConfig, state: MailboxState, on_quarantine: QuarantineWriter
    ) -> MailboxIngest:
        return MailboxIngest(
            mailbox_name=config.mailbox,
            connect=lambda: Pop3Mailbox(
                config,
                timeout=settings.pop3_timeout_seconds,
                min_bytes_per_second=settings.min_transfer_bytes_per_second,
                # A read still going when half the margin is left is cut off, so
                # the run ends (and reports) before Lambda stops it.
                time_left=lambda: (
                    context.get_remaining_time_in_millis() / 1000
                    - settings.deadline_margin_seconds / 2
                ),
            ),
            store=message_store(settings.bucket),
            announcer=SqsAnnouncer(aws_clients().sqs, settings.queue_url),
            deadline=Deadline(
                context.get_remaining_time_in_millis, settings.deadline_margin_seconds
            ),
            options=IngestOptions.from_settings(settings, config),
            state=state,
            on_quarantine=on_quarantine,
        )

    return start
