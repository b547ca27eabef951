"""S3 as the message store: conditional writes, verified checksums, bounded memory."""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.subscribers import BaseSubscriber

from pop3_ingest.config import DEFAULT_STREAM_THRESHOLD, MIB
from pop3_ingest.domain.message import StoredObject
from pop3_ingest.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from s3transfer.manager import TransferManager

logger = logging.getLogger(__name__)

# User metadata S3 stores with an object (string to string).
ObjectMetadata = dict[str, str]
# How often a waiting upload checks whether the run was cut off.
_CANCEL_POLL_SECONDS = 0.2
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")


def transfer_config() -> TransferConfig:
    """Multipart settings that bound memory whatever the message size.

    A non-seekable stream is buffered one part at a time and at most
    ``max_in_memory_upload_chunks`` parts are held: 4 x 8 MiB caps the upload
    buffers at 32 MiB for a message of any size.
    """
    config = TransferConfig(
        # The core hands over a file only above its own stream threshold.
        multipart_threshold=DEFAULT_STREAM_THRESHOLD,
        multipart_chunksize=8 * MIB,
        max_concurrency=4,
    )
    # Not a boto3 constructor argument, but s3transfer honours it.
    config.max_in_memory_upload_chunks = 4
    return config


def _require_absent(params: dict[str, Any], **_: Any) -> None:
    # S3 conditional write: a re-run after a crash finds the object already
    # there and gets 412 instead of writing a second copy or version. The
    # managed transfer does not accept IfNoneMatch, so it is added here.
    params.setdefault("IfNoneMatch", "*")


class S3MessageStore:
    def __init__(self, client: S3Client, bucket: str, config: TransferConfig | None = None) -> None:
        self._client = client
        self.bucket = bucket
        self._config = config or transfer_config()
        self._manager: TransferManager | None = None
        self._manager_lock = threading.Lock()
        events = client.meta.events
        events.register("before-parameter-build.s3.PutObject", _require_absent)
        events.register("before-parameter-build.s3.CompleteMultipartUpload", _require_absent)

    def put_bytes(self, key: str, data: bytes, sha256_hex: str, metadata: ObjectMetadata) -> bool:
        """One PUT with our SHA-256 as its checksum: S3 rejects the write if a byte
        differs. Returns False when the key already exists."""
        return self._write_once(
            f"put of s3://{self.bucket}/{key}",
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="message/rfc822",
                Metadata={**metadata, "sha256": sha256_hex},
                ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii"),
                IfNoneMatch="*",
            ),
        )

    def put_file(
        self,
        key: str,
        path: str,
        sha256_hex: str,
        metadata: ObjectMetadata,
        cancelled: Callable[[], bool],
    ) -> bool:
        """Managed (multipart) upload of a big message whose digest is known.

        The digest goes into the object's metadata like put_bytes', so every
        object, multipart included, can prove what it holds. Gives up as soon
        as ``cancelled()`` is true: the transfer is cancelled, and s3transfer
        aborts its multipart upload. False when the key already exists.
        """

        def upload() -> None:
            finished = _DoneSignal()
            future = self._transfer_manager().upload(
                path,
                self.bucket,
                key,
                extra_args={
                    "ContentType": "message/rfc822",
                    "Metadata": {**metadata, "sha256": sha256_hex},
                },
                subscribers=[finished],
            )
            while not finished.event.wait(_CANCEL_POLL_SECONDS):
                if cancelled():
                    future.cancel()
                    # s3transfer aborts only once its part uploads return,
                    # which a hanging S3 may not let happen before the deadline.
                    self._abort_multipart_uploads(key)
                    raise StoreError(
                        f"S3 upload of s3://{self.bucket}/{key} abandoned at the deadline"
                    )
            try:
                future.result()
            except CancelledError as exc:
                raise StoreError(f"S3 upload of s3://{self.bucket}/{key} cancelled") from exc

        return self._write_once(f"upload of s3://{self.bucket}/{key}", upload)

    def _write_once(self, what: str, write: Callable[[], object]) -> bool:
        """``write()`` under ``If-None-Match: *``: False when the key already exists."""
        try:
            write()
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _is_precondition_failed(exc):
                return False
            raise StoreError(f"S3 {what} failed: {exc}") from exc
        return True

    def _abort_multipart_uploads(self, key: str) -> None:
        try:
            listing = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in listing.get("Uploads", []):
                if upload.get("Key") == key and "UploadId" in upload:
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                    )
        except (ClientError, BotoCoreError) as exc:
            # The bucket's lifecycle rule removes what is left (template.yaml).
            logger.warning("multipart upload not aborted", extra={"key": key, "error": str(exc)})

    def stored_object(self, key: str) -> StoredObject | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _error_code(exc) in _NOT_FOUND:
                return None
            raise StoreError(f"S3 head of s3://{self.bucket}/{key} failed: {exc}") from exc
        recorded = head.get("Metadata", {}).get("sha256")
        # Only a well-formed digest is evidence; anything else proves nothing.
        sha256 = recorded if recorded and _SHA256_HEX.fullmatch(recorded) else None
        return StoredObject(size=int(head["ContentLength"]), sha256=sha256)

    def _transfer_manager(self) -> TransferManager:
        # One manager (and its thread pool) for the life of the process.
        with self._manager_lock:
            if self._manager is None:
                self._manager = create_transfer_manager(self._client, self._config)
            return self._manager


class _DoneSignal(BaseSubscriber):
    """Lets the caller wait for a transfer with a timeout (its future has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def on_done(self, future: Any, **kwargs: Any) -> None:
        self.event.set()


def _error_code(exc: ClientError) -> str | None:
    return exc.response.get("Error", {}).get("Code")


def _is_precondition_failed(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(exc) == "PreconditionFailed" or status == 412
