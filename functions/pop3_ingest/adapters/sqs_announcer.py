"""SQS as the announcer: one JSON pointer per stored message."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.errors import AnnounceError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsAnnouncer:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def announce(self, pointer: dict[str, Any]) -> None:
        try:
            self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=json.dumps(pointer, ensure_ascii=False, separators=(",", ":")),
                MessageAttributes={
                    "mailbox": {"DataType": "String", "StringValue": str(pointer["mailbox"])}
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise AnnounceError(f"SQS send for {pointer.get('key')} failed: {exc}") from exc
