"""Messages the function stored in S3, read back: which exist, and the pointer each had."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.domain.message import (
    HEADER_LIMIT,
    StoredMessage,
    is_sha256,
    parse_header_fields,
)
from pop3_ingest_cli.errors import error_line

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredEntry:
    """One listed object: key, size and when it was written."""

    key: str
    size: int
    last_modified: datetime

    @property
    def stored_at(self) -> str:
        return self.last_modified.isoformat(timespec="seconds")


@dataclass
class Rebuilt:
    """An object's pointer as rebuilt, or why it could not be."""

    entry: StoredEntry
    pointer: dict[str, Any] | None = None
    sha256_computed: bool = False
    error: str | None = None


def _written_in(written: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or written >= since) and (until is None or written < until)


def list_stored(
    s3: S3Client,
    bucket: str,
    prefix: str,
    since: datetime | None,
    until: datetime | None,
    on_page: Callable[[int], None] | None = None,
) -> tuple[int, list[StoredEntry]]:
    """Message objects directly under ``prefix`` (``*.eml``) written in [since, until).

    Returns how many message objects were listed and the ones in range, oldest
    first. ``on_page`` is told how many were listed so far, page by page.
    """
    listed = 0
    in_range: list[StoredEntry] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        if on_page is not None:
            on_page(listed)
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) :]
            if "/" in name or not name.endswith(".eml"):
                continue  # not one of the function's message objects
            listed += 1
            written = obj["LastModified"].astimezone(UTC)
            if _written_in(written, since, until):
                in_range.append(StoredEntry(obj["Key"], int(obj["Size"]), written))
    in_range.sort(key=lambda e: (e.last_modified, e.key))
    return listed, in_range


@dataclass(frozen=True)
class _ObjectFacts:
    size: int
    metadata: dict[str, str]
    sha256: str  # "" when neither the metadata had it nor it was computed
    header_block: bytes
    sha256_computed: bool


def _read_facts(s3: S3Client, bucket: str, key: str, *, compute_sha256: bool) -> _ObjectFacts:
    head = s3.head_object(Bucket=bucket, Key=key)
    size = int(head["ContentLength"])
    metadata = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
    sha256 = metadata.get("sha256", "").lower()
    if not is_sha256(sha256):
        sha256 = ""
    if not sha256 and compute_sha256:
        sha256, header_block = _hash_object(s3, bucket, key, size)
        return _ObjectFacts(size, metadata, sha256, header_block, sha256_computed=True)
    header_block = b""
    if size:
        ranged = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEADER_LIMIT - 1}")
        header_block = ranged["Body"].read()
    return _ObjectFacts(size, metadata, sha256, header_block, sha256_computed=False)


def rebuild_pointer(
    s3: S3Client, bucket: str, mailbox: str, entry: StoredEntry, *, compute_sha256: bool
) -> Rebuilt:
    """The pointer the function sent for this object, rebuilt from S3 alone.

    HEAD gives size and metadata (``sha256`` is there for all but streamed,
    multipart uploads); a ranged GET of the first 64 KiB gives the header
    fields. Without ``sha256`` metadata the whole object is read and hashed
    (unless ``compute_sha256`` is False, as in a dry run).
    """
    try:
        facts = _read_facts(s3, bucket, entry.key, compute_sha256=compute_sha256)
    except (ClientError, BotoCoreError, OSError, ValueError) as exc:
        return Rebuilt(entry, error=error_line(exc))
    record = StoredMessage(
        bucket=bucket,
        key=entry.key,
        size=facts.size,
        sha256=facts.sha256,
        mailbox=mailbox,
        uidl="",
        headers=parse_header_fields(facts.header_block),
        stored_at=entry.last_modified,
    )
    pointer = record.pointer()
    # The key holds a digest of the UIDL, not the UIDL: only metadata could give it back.
    pointer["uidl"] = facts.metadata.get("uidl") or None
    pointer["sha256"] = facts.sha256 or None
    pointer["replayed"] = True
    return Rebuilt(entry, pointer, sha256_computed=facts.sha256_computed)


def _hash_object(s3: S3Client, bucket: str, key: str, size: int) -> tuple[str, bytes]:
    """SHA-256 and header block of the whole object, read as a stream."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    head = bytearray()
    read = 0
    try:
        for chunk in body.iter_chunks(_HASH_CHUNK):
            digest.update(chunk)
            read += len(chunk)
            if len(head) < HEADER_LIMIT:
                head += chunk[: HEADER_LIMIT - len(head)]
    finally:
        body.close()
    if read != size:
        raise ValueError(f"read {read} bytes of {key} but S3 reported {size}")
    return digest.hexdigest(), bytes(head)
