"""A consumer of pop3-ingest's pointers: a Lambda function fed by the pointer queue.

For each pointer (docs/pointer.md) it fetches the object, checks that the
bytes' SHA-256 is the pointer's, parses them with the standard library's
``email`` (``email.policy.default``) and logs who wrote what. Replace
:func:`handle` with what your application does with a message.

- **Loops.** Auto-replies, bounces, lists and bulk mail are told apart by
  the pointer alone (``auto_submitted``, ``precedence``, ``return_path``,
  ``list_id``), without parsing the message: a helpdesk must not answer them.
- **Duplicates.** Delivery is at least once; ``key`` is the idempotency key.
- **Failures.** A record that fails (the object is missing or not the bytes
  announced) is reported back (``ReportBatchItemFailures``): SQS delivers it
  again, then moves it to the dead-letter queue; the batch's others are done.

Deployed with template-snippet.yaml. Runs on the Lambda runtime's boto3 and
the Powertools layer; nothing else.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

if TYPE_CHECKING:
    from email.message import Message

    from mypy_boto3_s3 import S3Client

# The pointer's meaning is that of version 1; fields may be added to it.
POINTER_VERSION = 1
# Precedence values of mail no person wrote to you (RFC 2076; "auto_reply" is common).
_NOT_PERSONAL = frozenset({"bulk", "junk", "list", "auto_reply"})

logger = Logger(service="pop3-ingest-consumer")
processor = BatchProcessor(event_type=EventType.SQS)


class NotTheAnnouncedBytes(Exception):
    """The object's SHA-256 is not the pointer's: never act on it."""


@dataclass(frozen=True)
class Received:
    """What one pointer's message came to."""

    key: str
    subject: str | None
    sender: str | None
    message_id: str | None
    # An auto-reply, a bounce, a list or bulk message: not to be answered.
    automatic: bool


@cache
def s3_client() -> S3Client:
    """Created on first use (never at import), reused while the function is warm."""
    return boto3.client("s3")


def is_automatic(pointer: Mapping[str, Any]) -> bool:
    """Whether the message is one no person wrote: answering it could start a loop.

    RFC 3834: ``Auto-Submitted`` other than "no"; a null return path (``<>``:
    bounces and other notifications); a mailing list; bulk precedence.
    """
    auto = str(pointer.get("auto_submitted") or "no").split(";")[0].strip().lower()
    precedence = str(pointer.get("precedence") or "").strip().lower()
    return (
        auto != "no"
        or pointer.get("return_path") == "<>"
        or pointer.get("list_id") is not None
        or precedence in _NOT_PERSONAL
    )


def receive(pointer: Mapping[str, Any], s3: S3Client | None = None) -> Received:
    """The pointer's message fetched, proven to be the bytes announced, and parsed."""
    if pointer.get("version") != POINTER_VERSION:
        raise ValueError(f"pointer version {pointer.get('version')!r:.20} is not understood")
    s3 = s3 or s3_client()
    # Up to the ingester's max_message_size (150 MiB by default): size the
    # function's memory for the largest message you accept.
    raw = s3.get_object(Bucket=pointer["bucket"], Key=pointer["key"])["Body"].read()
    if hashlib.sha256(raw).hexdigest() != pointer["sha256"]:
        raise NotTheAnnouncedBytes(f"{pointer['key']}: SHA-256 differs from the pointer's")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return Received(
        key=pointer["key"],
        subject=_header(message, "Subject"),
        sender=_header(message, "From"),
        message_id=_header(message, "Message-ID"),
        automatic=is_automatic(pointer),
    )


def _header(message: Message, name: str) -> str | None:
    value = message[name]
    return None if value is None else str(value)


def handle(record: SQSRecord) -> Received:
    """One SQS record: its pointer's message received and logged."""
    received = receive(json.loads(record.body))
    logger.info(
        "mail received",
        extra={
            "key": received.key,
            "subject": received.subject,
            "from": received.sender,
            "automatic": received.automatic,
        },
    )
    return received


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle, processor=processor, context=context
    )
