"""SQS as the announcer: one JSON pointer per stored message, sent in batches."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.errors import AnnounceError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

BATCH_SIZE = 10  # SQS's limit per SendMessageBatch


class SqsAnnouncer:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def announce_batch(self, pointers: list[dict[str, Any]]) -> set[int]:
        """Send up to ten pointers; returns the indexes SQS did not accept.

        Raises AnnounceError when the call as a whole failed.
        """
        if not 0 < len(pointers) <= BATCH_SIZE:
            raise ValueError(f"a batch holds 1-{BATCH_SIZE} pointers, got {len(pointers)}")
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "MessageBody": json.dumps(pointer, ensure_ascii=False, separators=(",", ":")),
                "MessageAttributes": {
                    "mailbox": {"DataType": "String", "StringValue": str(pointer["mailbox"])}
                },
            }
            for index, pointer in enumerate(pointers)
        ]
        try:
            response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise AnnounceError(
                f"SQS batch send of {len(pointers)} pointer(s) failed: {exc}"
            ) from exc
        return {int(failed["Id"]) for failed in response.get("Failed", [])}
