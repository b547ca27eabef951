"""Mode fleet: a batch of jobs from the FIFO jobs queue, its mailboxes run side by side.

Lambda's SQS event source hands over up to 10 jobs. Jobs of different message
groups (different mailboxes) run at the same time on a bounded pool of threads,
so that their POP3 waits (connect, TLS, login, listing) overlap; jobs of one
group run one after the other, in order. The answer names every job that
failed and every later job of its group (ReportBatchItemFailures), so SQS
delivers them again in their order and the other groups go on.

Stale jobs cost next to nothing (:mod:`pop3_ingest.domain.job`): one scheduled
too long ago is dropped before anything is read for it; the others' secrets are
read together (BatchGetSecretValue), and a job whose mailbox ran since its tick
is dropped after the state read, before logging in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser import BaseModel, ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AwareDatetime, ConfigDict, StrictStr, StringConstraints

from pop3_ingest.config import MailboxConfig, Mode, Settings
from pop3_ingest.domain.job import Job
from pop3_ingest.domain.run import lease_owner, run_mailbox
from pop3_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    JobError,
    SecretError,
    TlsError,
)
from pop3_ingest.handlers.observability import count, logger, reporting, tracer
from pop3_ingest.handlers.wiring import ReadAhead, run_ports, state_store
from pop3_ingest.integrations.secrets import load_mailbox_config, load_mailbox_configs

# Failures that belong to one mailbox: recorded in its state, logged and
# counted, and tried again at its next tick. Anything else fails the job,
# which SQS delivers again and finally moves to the jobs DLQ.
_MAILBOX_ERRORS = (AuthError, TlsError, ConnectError, ConnectionLost, ConfigError, SecretError)
_run = tracer.capture_method(run_mailbox)


class JobBody(BaseModel):
    """A job's body, as the mailbox's schedule sends it (``scheduled_at`` optional)."""

    model_config = ConfigDict(hide_input_in_errors=True)
    secret_id: Annotated[StrictStr, StringConstraints(min_length=1)]
    scheduled_at: AwareDatetime | None = None


@dataclass(frozen=True)
class Entry:
    """One record of the batch: its job, or why it is not one."""

    message_id: str
    group: str
    job: Job | JobError


def run_jobs(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The batch's jobs; ``batchItemFailures`` names those SQS must deliver again."""
    entries = [_entry(SQSRecord(record)) for record in event["Records"]]
    failed = _failed(entries, context)
    return {
        "batchItemFailures": [
            {"itemIdentifier": e.message_id} for e in entries if e.message_id in failed
        ]
    }


def _failed(entries: list[Entry], context: LambdaContext) -> set[str]:
    """Run the batch; the message ids of the jobs that failed or were not run."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        # As for a single mailbox: reported, and the next tick tries again.
        count("ConfigInvalid")
        logger.error("configuration error", extra={"error": str(exc)})
        return {e.message_id for e in entries if isinstance(e.job, JobError)}
    groups = _groups(entries)
    batch = _Batch(settings, context, groups)
    with ThreadPoolExecutor(max_workers=batch.side_by_side, thread_name_prefix="job") as pool:
        return set[str]().union(*pool.map(batch.run_group, groups))


class _Batch:
    """What the batch's jobs share: settings, the Lambda context, the secrets read once."""

    def __init__(
        self, settings: Settings, context: LambdaContext, groups: list[list[Entry]]
    ) -> None:
        self.settings = settings
        self.context = context
        self.now = time.time()
        # One group at a time each: runs of one mailbox never overlap.
        self.side_by_side = max(1, min(settings.job_concurrency, len(groups)))
        jobs = [e.job for group in groups for e in group if isinstance(e.job, Job)]
        wanted = [job.secret_id for job in jobs if not job.too_old(self.now)]
        self.configs = load_mailbox_configs(wanted) if wanted else {}
        self.owner = lease_owner(getattr(context, "aws_request_id", None))

    def run_group(self, group: list[Entry]) -> list[str]:
        """A group's jobs in order; a failed one fails the rest of the group unrun."""
        for index, entry in enumerate(group):
            if not self.run_entry(entry):
                return [e.message_id for e in group[index:]]
        return []

    def run_entry(self, entry: Entry) -> bool:
        """One job; False when SQS must deliver it again."""
        job = entry.job
        if isinstance(job, JobError):
            logger.error("job is malformed", extra={"error": str(job)})
            return False
        if job.too_old(self.now):
            _dropped(job, "scheduled longer ago than any mailbox's interval")
            return True
        config = self.configs[job.secret_id]
        with _mailbox_keys(config):
            try:
                self.run(job, config)
            except _MAILBOX_ERRORS:
                return True  # recorded, logged and counted where it happened
            except Exception:
                logger.exception(
                    "job failed; SQS delivers it again", extra={"job": entry.message_id}
                )
                return False
        return True

    def run(self, job: Job, config: MailboxConfig | SecretError) -> None:
        """One mailbox's run for ``job``, unless its state shows a run since the tick."""
        with reporting(job.secret_id) as report:
            if isinstance(config, SecretError):
                count("ConfigInvalid")
                logger.error("configuration error", extra={"error": str(config)})
                raise config
            # Jobs are Mode fleet's: never a metric dimension per mailbox.
            report.identify(config.mailbox, Mode.FLEET)
            states = state_store(self.settings, self.context)
            current = states.read(config.mailbox)
            if job.overtaken(current.state):
                _dropped(job, "its mailbox ran since the tick")
                return  # not a run: no "run finished" line
            ports = run_ports(
                self.settings,
                self.context,
                lambda: load_mailbox_config(job.secret_id, fresh=True),
                states=ReadAhead(states, current),
                side_by_side=self.side_by_side,
            )
            outcome = _run(
                config,
                ports,
                owner=self.owner,
                auth_failure_limit=self.settings.auth_failure_limit,
                # The FIFO message group runs one job per mailbox at a time.
                take_lease=False,
                paced_by_schedule=job.scheduled_at is not None,
            )
            report.finished(outcome)


def _entry(record: SQSRecord) -> Entry:
    group = record.attributes.message_group_id or record.message_id
    try:
        body = parse(record.json_body, JobBody)
    except ValidationError:
        problem = JobError(f"job {record.message_id} has no usable 'secret_id'/'scheduled_at'")
        return Entry(record.message_id, group, problem)
    except ValueError:
        return Entry(record.message_id, group, JobError(f"job {record.message_id} is not JSON"))
    scheduled = body.scheduled_at.timestamp() if isinstance(body.scheduled_at, datetime) else None
    return Entry(record.message_id, group, Job(body.secret_id, scheduled))


def _groups(entries: list[Entry]) -> list[list[Entry]]:
    """The entries by message group, each group in the batch's order."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    return list(groups.values())


@contextmanager
def _mailbox_keys(config: MailboxConfig | SecretError) -> Iterator[None]:
    """This thread's log lines name the mailbox; the other threads' name theirs."""
    if isinstance(config, SecretError):
        yield
        return
    logger.thread_safe_append_keys(mailbox=config.mailbox)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(["mailbox"])


def _dropped(job: Job, why: str) -> None:
    count("JobsStale")
    fields = {"secret_id": job.secret_id, "reason": why, "scheduled_at": job.scheduled_at}
    logger.info("job dropped: stale", extra=fields)
