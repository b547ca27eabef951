"""S3 as the message store: streamed, managed uploads that never overwrite."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.errors import StoreError
from pop3_ingest.message import Readable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024


def transfer_config() -> TransferConfig:
    """Multipart settings that bound memory whatever the message size.

    A non-seekable stream is buffered one part at a time; at most
    ``max_in_memory_upload_chunks`` parts are held, so 4 x 8 MiB caps the
    upload buffers at 32 MiB for a 100 MB message.
    """
    config = TransferConfig(
        multipart_threshold=8 * MIB,
        multipart_chunksize=8 * MIB,
        max_concurrency=4,
    )
    # Not a boto3 constructor argument, but s3transfer honours it.
    config.max_in_memory_upload_chunks = 4
    return config


def _require_absent(params: dict[str, Any], **_: Any) -> None:
    # S3 conditional write: a re-run after a crash finds the object already
    # there and gets 412 instead of writing a second copy or version.
    params.setdefault("IfNoneMatch", "*")


class S3MessageStore:
    def __init__(self, client: S3Client, bucket: str, config: TransferConfig | None = None) -> None:
        self._client = client
        self.bucket = bucket
        self._config = config or transfer_config()
        events = client.meta.events
        events.register("before-parameter-build.s3.PutObject", _require_absent)
        events.register("before-parameter-build.s3.CompleteMultipartUpload", _require_absent)

    def store(self, key: str, body: Readable, metadata: dict[str, str]) -> bool:
        try:
            self._client.upload_fileobj(
                body,  # type: ignore[arg-type]  # any object with read() will do
                self.bucket,
                key,
                ExtraArgs={"ContentType": "message/rfc822", "Metadata": metadata},
                Config=self._config,
            )
        except ClientError as exc:
            if _is_precondition_failed(exc):
                return False
            raise StoreError(f"S3 put of s3://{self.bucket}/{key} failed: {exc}") from exc
        except S3UploadFailedError as exc:
            if "PreconditionFailed" in str(exc):
                return False
            raise StoreError(f"S3 put of s3://{self.bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 put of s3://{self.bucket}/{key} failed: {exc}") from exc
        return True

    def stored_size(self, key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreError(f"S3 head of s3://{self.bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 head of s3://{self.bucket}/{key} failed: {exc}") from exc
        return int(head["ContentLength"])


def _is_precondition_failed(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") == "PreconditionFailed" or status == 412
