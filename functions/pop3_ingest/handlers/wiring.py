"""The real ports of a run: the AWS clients and adapters, and the core over a POP3 session.

Clients are created on first use (never at import) and reused across warm
invocations; everything else is built per run from the settings and the
Lambda context's deadline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from pop3_ingest.config import MailboxConfig, OAuthSettings, Settings
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.ports import StateStore
from pop3_ingest.domain.run import CoreFactory, QuarantineWriter, RunPorts
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.errors import SecretError
from pop3_ingest.handlers.observability import PowertoolsObserver, count, logger
from pop3_ingest.integrations.oauth_tokens import take_rotation
from pop3_ingest.integrations.s3_state import STATE_CLIENT_CONFIG, S3StateStore, Snapshot
from pop3_ingest.integrations.s3_store import S3MessageStore
from pop3_ingest.integrations.secrets import WriteBack, write_back_refresh_token
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
# The most a refresh token's write-back may take (two Secrets Manager calls with
# short timeouts); with less time left it is not tried.
_WRITE_BACK_SECONDS = 30.0


@dataclass(frozen=True)
class AwsClients:
    s3: S3Client
    # Without the mail store's conditional-write hook, and with short timeouts
    # and few retries: a state write must fit in what is left of the run.
    s3_state: S3Client
    sqs: SQSClient


# The jobs of a batch start side by side, and a client costs about 0.1 s of CPU
# to build: without the lock, each of them built its own set at a cold start.
_CLIENTS_LOCK = threading.Lock()


def aws_clients() -> AwsClients:
    """Created on first use, once, then reused across warm invocations."""
    with _CLIENTS_LOCK:
        return _new_aws_clients()


@cache
def _new_aws_clients() -> AwsClients:
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
            connect=lambda: TokenWritingMailbox(
                config,
                write_back=token_write_back(settings, context),
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


# -- a rotated OAuth2 refresh token, written back -------------------------------------


class TokenWritingMailbox(Pop3Mailbox):
    """A POP3 session that, once logged in, writes back a refresh token its login rotated
    (Microsoft 365 delegated access): only after a login that worked, so a token that
    logs nobody in never replaces the secret's (nor changes the secret, which would
    lift a login suspension)."""

    def __init__(
        self,
        config: MailboxConfig,
        timeout: float,
        *,
        write_back: Callable[[OAuthSettings], None],
        **options: Any,
    ) -> None:
        super().__init__(config, timeout, **options)
        self.oauth_settings = config.oauth
        self.write_back = write_back

    def __enter__(self) -> Pop3Mailbox:
        session = super().__enter__()
        if self.oauth_settings is not None:
            self.write_back(self.oauth_settings)
        return session


def token_write_back(settings: Settings, context: LambdaContext) -> Callable[[OAuthSettings], None]:
    """Writes a rotated refresh token to the secrets holding the old one. Never raises:
    the old token usually stays valid a while, so a failure is logged and counted."""

    def write_back(oauth: OAuthSettings) -> None:
        rotation = take_rotation(oauth)
        if rotation is None:
            return
        if _seconds_left(context) < settings.deadline_margin_seconds + _WRITE_BACK_SECONDS:
            logger.warning("rotated refresh token not written back: the run is nearly out of time")
            return
        try:
            results = write_back_refresh_token(
                rotation, min_age=settings.refresh_token_writeback_seconds
            )
        except Exception as exc:  # a bug must not fail the run; its text may hold anything
            results = {"": SecretError(f"write-back failed ({type(exc).__name__})")}
        for secret_id, result in results.items():
            _report_write_back(secret_id, result)

    return write_back


def _report_write_back(secret_id: str, result: WriteBack | SecretError) -> None:
    fields = {"secret_id": secret_id} if secret_id else {}
    if isinstance(result, SecretError) or result is WriteBack.UNKNOWN:
        count("RefreshTokenWriteBackFailed")
        logger.error(
            "rotated refresh token not written back; the secret keeps the one it holds, "
            "which usually stays valid for a while (docs/providers.md)",
            extra={**fields, "error": str(result)},
        )
    elif result is WriteBack.WRITTEN:
        count("RefreshTokenWrittenBack")
        logger.info("rotated refresh token written back to the secret", extra=fields)
    else:
        logger.info(f"rotated refresh token {result.value}", extra=fields)
