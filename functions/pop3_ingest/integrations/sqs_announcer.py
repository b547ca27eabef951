"""SQS as the announcer: one JSON pointer per stored message, sent in batches.

Every body is checked where it is written: SQS refuses a body holding a
character outside its set (tab, LF, CR, U+0020-U+D7FF, U+E000-U+FFFD,
U+10000-U+10FFFF) with ``InvalidMessageContents``, and a message, or a batch as
a whole, over 256 KiB. The header fields are cleaned when parsed
(:func:`pop3_ingest.domain.message.sqs_text`); cleaning the JSON text again here
covers every other field, and a batch too large for one call is split.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.domain.message import sqs_text
from pop3_ingest.domain.ports import SQS_BATCH_SIZE
from pop3_ingest.errors import AnnounceError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

logger = logging.getLogger(__name__)

# SQS's limit for one message and for a whole batch: body plus attributes.
MAX_PAYLOAD_BYTES = 256 * 1024


def pointer_body(pointer: dict[str, Any]) -> str:
    """The SQS body of a pointer: compact JSON, only characters SQS accepts."""
    # ensure_ascii=False keeps non-ASCII text readable and small; JSON escapes
    # control characters, and sqs_text replaces what JSON passes through
    # (U+FFFE, U+FFFF, lone surrogates). Inside a JSON string, so still JSON.
    return sqs_text(json.dumps(pointer, ensure_ascii=False, separators=(",", ":")))


def payload_size(entry: SendMessageBatchRequestEntryTypeDef) -> int:
    """What SQS counts against MAX_PAYLOAD_BYTES: the body and every attribute."""
    size = len(entry["MessageBody"].encode("utf-8"))
    for name, attribute in entry.get("MessageAttributes", {}).items():
        size += len(name.encode("utf-8")) + len(attribute["DataType"].encode("utf-8"))
        size += len(attribute.get("StringValue", "").encode("utf-8"))
    return size


class SqsAnnouncer:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]:
        """Send up to SQS_BATCH_SIZE pointers; returns the indexes SQS did not accept.

        Raises AnnounceError when a call as a whole failed.
        """
        if not 0 < len(pointers) <= SQS_BATCH_SIZE:
            raise ValueError(f"a batch holds 1-{SQS_BATCH_SIZE} pointers, got {len(pointers)}")
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "MessageBody": pointer_body(pointer),
                "MessageAttributes": {
                    "mailbox": {
                        "DataType": "String",
                        "StringValue": sqs_text(str(pointer["mailbox"])),
                    }
                },
            }
            for index, pointer in enumerate(pointers)
        ]
        failed: set[int] = set()
        calls: list[list[SendMessageBatchRequestEntryTypeDef]] = []
        used = MAX_PAYLOAD_BYTES  # start a new call with the first entry
        for entry in entries:
            size = payload_size(entry)
            if size > MAX_PAYLOAD_BYTES:
                # Cannot happen with bounded header fields; SQS would refuse it anyway.
                logger.error("pointer larger than SQS accepts", extra={"bytes": size})
                failed.add(int(entry["Id"]))
                continue
            if used + size > MAX_PAYLOAD_BYTES:
                calls.append([])
                used = 0
            calls[-1].append(entry)
            used += size
        for call in calls:
            failed |= self._send(call, len(pointers))
        return failed

    def _send(self, entries: list[SendMessageBatchRequestEntryTypeDef], total: int) -> set[int]:
        try:
            response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise AnnounceError(
                f"SQS batch send of {len(entries)} of {total} pointer(s) failed: {exc}"
            ) from exc
        return {int(failed["Id"]) for failed in response.get("Failed", [])}
