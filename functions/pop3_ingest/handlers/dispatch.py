"""Dispatcher: one job per enabled mailbox on a FIFO queue.

Each mailbox is one secret tagged ``pop3-ingest=enabled``. The job's message
group is the secret's name, so SQS never hands two jobs for one mailbox to
two invocations at once: no overlapping sessions, no [IN-USE] fights.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.domain.ports import SQS_BATCH_SIZE
from pop3_ingest.errors import ConfigError, Pop3IngestError
from pop3_ingest.handlers.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

# A job sent twice within one window is dropped by SQS (FIFO deduplication),
# so a retried dispatcher run does not double the work.
DEDUP_WINDOW_SECONDS = 300


class DispatchError(Pop3IngestError):
    """Listing the mailboxes or enqueueing their jobs failed."""


@dataclass(frozen=True)
class DispatchSettings:
    jobs_queue_url: str
    tag_key: str = "pop3-ingest"
    tag_value: str = "enabled"

    @classmethod
    def from_env(cls) -> DispatchSettings:
        url = os.environ.get("JOBS_QUEUE_URL", "").strip()
        if not url:
            raise ConfigError("environment variable JOBS_QUEUE_URL is not set")
        if not url.endswith(".fifo"):
            raise ConfigError("JOBS_QUEUE_URL must be a FIFO queue (its name ends in .fifo)")
        return cls(
            jobs_queue_url=url,
            tag_key=os.environ.get("MAILBOX_TAG_KEY", "pop3-ingest").strip() or "pop3-ingest",
            tag_value=os.environ.get("MAILBOX_TAG_VALUE", "enabled").strip() or "enabled",
        )


def enabled_mailbox_secrets(client: SecretsManagerClient, settings: DispatchSettings) -> list[str]:
    """Names of the secrets tagged ``<tag_key>=<tag_value>``, sorted."""
    names: list[str] = []
    try:
        pages = client.get_paginator("list_secrets").paginate(
            Filters=[
                {"Key": "tag-key", "Values": [settings.tag_key]},
                {"Key": "tag-value", "Values": [settings.tag_value]},
            ]
        )
        for page in pages:
            for secret in page.get("SecretList", []):
                tags = {t.get("Key"): t.get("Value") for t in secret.get("Tags", [])}
                # The two filters match independently; insist on the pair.
                if tags.get(settings.tag_key) == settings.tag_value and "Name" in secret:
                    names.append(secret["Name"])
    except (ClientError, BotoCoreError) as exc:
        raise DispatchError(f"cannot list mailbox secrets: {exc}") from exc
    return sorted(set(names))


def enqueue_jobs(
    client: SQSClient, queue_url: str, secret_names: list[str], now: float
) -> tuple[int, list[str]]:
    """Send one job per mailbox; returns (sent, names that failed)."""
    window = int(now // DEDUP_WINDOW_SECONDS)
    sent = 0
    failed: list[str] = []
    for start in range(0, len(secret_names), SQS_BATCH_SIZE):
        batch = secret_names[start : start + SQS_BATCH_SIZE]
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "MessageBody": json.dumps({"secret_id": name}),
                "MessageGroupId": _group_id(name),
                "MessageDeduplicationId": hashlib.sha256(f"{name}|{window}".encode()).hexdigest(),
            }
            for index, name in enumerate(batch)
        ]
        try:
            response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            logger.error("job batch not sent", extra={"error": str(exc), "count": len(batch)})
            failed.extend(batch)
            continue
        bad = {int(entry["Id"]) for entry in response.get("Failed", [])}
        failed.extend(batch[i] for i in sorted(bad))
        sent += len(batch) - len(bad)
    return sent, failed


def _group_id(secret_name: str) -> str:
    # Group ids allow 128 characters of a limited set; a digest of the name
    # fits any secret name and still keeps one group per mailbox.
    return hashlib.sha256(secret_name.encode()).hexdigest()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = DispatchSettings.from_env()
    session = boto3.session.Session()
    names = enabled_mailbox_secrets(session.client("secretsmanager"), settings)
    sent, failed = enqueue_jobs(session.client("sqs"), settings.jobs_queue_url, names, time.time())
    metrics.add_metric(name="MailboxesDispatched", unit=MetricUnit.Count, value=sent)
    metrics.add_metric(name="DispatchFailed", unit=MetricUnit.Count, value=len(failed))
    result = {"mailboxes": len(names), "enqueued": sent, "failed": failed}
    logger.info("dispatch finished", extra={"result": result})
    if failed:
        raise DispatchError(f"{len(failed)} of {len(names)} job(s) could not be enqueued")
    return result
