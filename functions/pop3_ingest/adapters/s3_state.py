"""Per-mailbox run state and quarantine records, as small JSON objects in S3."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.errors import StoreError
from pop3_ingest.state import MailboxState

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3StateStore:
    """``<prefix>_state/<mailbox>.json`` and ``<prefix>_quarantine/<mailbox>/<digest>.json``.

    Mailbox names start with a letter or digit, so these never collide with mail keys.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    def state_key(self, mailbox: str) -> str:
        return f"{self._prefix}_state/{mailbox}.json"

    def quarantine_prefix(self, mailbox: str) -> str:
        return f"{self._prefix}_quarantine/{mailbox}/"

    def quarantine_key(self, mailbox: str, digest: str) -> str:
        return f"{self.quarantine_prefix(mailbox)}{digest}.json"

    def load(self, mailbox: str) -> MailboxState:
        key = self.state_key(mailbox)
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return MailboxState()
            raise StoreError(f"cannot read run state s3://{self._bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot read run state s3://{self._bucket}/{key}: {exc}") from exc
        try:
            return MailboxState.from_json(json.loads(body))
        except (ValueError, TypeError, AttributeError):
            # A damaged state file must not stop the mailbox; it costs at most
            # re-announcing kept messages once.
            return MailboxState()

    def save(self, mailbox: str, state: MailboxState) -> None:
        self._put(self.state_key(mailbox), state.to_json())

    def put_quarantine_record(self, mailbox: str, digest: str, record: dict[str, Any]) -> None:
        self._put(self.quarantine_key(mailbox, digest), record)

    def _put(self, key: str, document: dict[str, Any]) -> None:
        try:
            # Overwritten every run; give this store a client without the
            # mail store's conditional-write hook.
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=json.dumps(document, separators=(",", ":")).encode(),
                ContentType="application/json",
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot write s3://{self._bucket}/{key}: {exc}") from exc
