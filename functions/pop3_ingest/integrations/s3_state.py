"""Per-mailbox run state and quarantine records, as small JSON objects in S3.

Every state write is conditional on the ETag last read or written
(``If-Match``; ``If-None-Match: *`` while there is none). A writer that lost
the race reads the document again and merges its own changes onto it: it never
overwrites another writer's. The same conditional write takes the mailbox's
lease at the start of a run that takes one (Mode single).

Every call is bounded by the run's deadline. The SDK's timeouts bound each
socket operation, not a whole call (a server that drips its answer never trips
them), so a call runs on a thread of its own and is given up, not waited for,
when the deadline comes. A write given up may still land later: it is
conditional, so it can only ever replace the version it was based on.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.domain.state import MailboxState
from pop3_ingest.errors import StateDamaged, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

logger = logging.getLogger(__name__)

# A document this large is not a run state (100,000 remembered deletions are
# about 10 MB): it is set aside unread rather than loaded into memory.
_MAX_STATE_BYTES = 64 * 1024 * 1024
# Conditional writes that lose the race are merged and tried again this often;
# S3 may also answer 409 while another write to the key is in flight.
_WRITE_ATTEMPTS = 4
_CONFLICT = (frozenset({"PreconditionFailed", "ConditionalRequestConflict"}), frozenset({409, 412}))
# A missing key; also what If-Match answers when the key is gone (an operator deleted it).
_GONE = (frozenset({"NoSuchKey", "NotFound"}), frozenset({404}))


# The state store's own client settings: quick to fail and few retries, since
# a state call has to fit in what is left of the run (usually the deadline
# margin). Merged over the function's common client settings.
STATE_CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "total_max_attempts": 2},
)

T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """A state as last read or written, and the ETag that proves which version it is.

    ``state`` is the merge base of the next write: callers work on a copy.
    """

    state: MailboxState
    etag: str | None  # None: no document yet
    damaged: str | None = None  # why the stored document was set aside, if it was


class _Conflict(Exception):  # an internal signal, never leaves this module
    """Someone else wrote the document since our snapshot."""


@dataclass(frozen=True)
class S3StateStore:
    """``<prefix>_state/<mailbox>.json`` and ``<prefix>_quarantine/<mailbox>/<digest>.json``.

    Mailbox names start with a letter or digit and hold no ``/``, so these
    never collide with mail keys, and ``_state/damaged/`` with no state.
    ``time_left`` (seconds) bounds every call: none is waited for past it.
    ``on_damaged`` is told each time a damaged state is set aside.
    """

    client: S3Client
    bucket: str
    prefix: str
    time_left: Callable[[], float] | None = field(default=None, kw_only=True)
    on_damaged: Callable[[str], None] | None = field(default=None, kw_only=True)

    def state_key(self, mailbox: str) -> str:
        return f"{self.prefix}_state/{mailbox}.json"

    def damaged_key(self, mailbox: str, at: datetime) -> str:
        return f"{self.prefix}_state/damaged/{mailbox}.{at:%Y%m%dT%H%M%S.%fZ}.json"

    def quarantine_prefix(self, mailbox: str) -> str:
        return f"{self.prefix}_quarantine/{mailbox}/"

    def quarantine_key(self, mailbox: str, digest: str) -> str:
        return f"{self.quarantine_prefix(mailbox)}{digest}.json"

    # -- reading ------------------------------------------------------------------

    def read(self, mailbox: str) -> Snapshot:
        """The stored state; a damaged one is set aside and read as empty."""
        key = self.state_key(mailbox)

        def get() -> tuple[str, bytes | None]:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            if response["ContentLength"] > _MAX_STATE_BYTES:
                response["Body"].close()
                return response["ETag"], None
            return response["ETag"], response["Body"].read()

        try:
            etag, body = self._bounded(f"read s3://{self.bucket}/{key}", get)
        except (ClientError, BotoCoreError) as exc:
            if _is(exc, _GONE):
                return Snapshot(MailboxState(), None)
            raise StoreError(f"cannot read run state s3://{self.bucket}/{key}: {exc}") from exc
        try:
            return Snapshot(_parse(body), etag)
        except StateDamaged as exc:
            return self._set_aside(mailbox, etag, exc)

    def _set_aside(self, mailbox: str, etag: str, damage: StateDamaged) -> Snapshot:
        key = self.state_key(mailbox)
        aside = self.damaged_key(mailbox, datetime.now(UTC))
        try:
            # Exactly the version that was read, even if it changed since.
            self._bounded(
                f"set aside s3://{self.bucket}/{key}",
                lambda: self.client.copy_object(
                    Bucket=self.bucket,
                    Key=aside,
                    CopySource={"Bucket": self.bucket, "Key": key},
                    CopySourceIfMatch=etag,
                ),
            )
        except (ClientError, BotoCoreError, StoreError) as exc:
            # The bucket is versioned: the damaged version stays recoverable there
            # for a day (when the state's old versions expire).
            logger.error(
                "damaged run state could not be copied aside",
                extra={"key": key, "error": str(exc)},
            )
            aside = ""
        logger.error(
            "run state damaged; set aside, this run starts from an empty state",
            extra={"key": key, "set_aside_as": aside, "error": str(damage)},
        )
        if self.on_damaged is not None:
            self.on_damaged(str(damage))
        return Snapshot(MailboxState(), etag, damaged=str(damage))

    # -- writing -------------------------------------------------------------------

    def take_lease(
        self, mailbox: str, owner: str, until: float, now: float, current: Snapshot
    ) -> Snapshot | None:
        """Claim the mailbox until ``until``, or None when another live run holds it.

        ``current`` is the snapshot the caller decided on; if the document
        changed since, it is read again and the lease checked again.
        """
        for _ in range(_WRITE_ATTEMPTS):
            holder = current.state.lease_holder(now)
            if holder is not None and holder != owner:
                return None
            leased = current.state.copy()
            leased.lease_owner = owner
            leased.lease_until = until
            try:
                return self._put_state(mailbox, leased, current.etag)
            except _Conflict:
                current = self.read(mailbox)
        return None

    def write(self, mailbox: str, state: MailboxState, base: Snapshot) -> Snapshot:
        """Save ``state``, a changed copy of ``base.state``, without losing others' writes.

        Returns what is stored now (the merge, when another writer came first).
        """
        mine = state
        for _ in range(_WRITE_ATTEMPTS):
            try:
                return self._put_state(mailbox, mine, base.etag)
            except _Conflict:
                theirs = self.read(mailbox)
                mine = MailboxState.merge(base.state, mine, theirs.state)
                base = theirs
        raise StoreError(
            f"run state of {mailbox} changed under every one of {_WRITE_ATTEMPTS} writes"
        )

    def put_quarantine_record(self, mailbox: str, digest: str, record: dict[str, Any]) -> None:
        key = self.quarantine_key(mailbox, digest)
        body = json.dumps(record, separators=(",", ":")).encode()
        try:
            self._bounded(
                f"write s3://{self.bucket}/{key}",
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
                ),
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc

    def _put_state(self, mailbox: str, state: MailboxState, etag: str | None) -> Snapshot:
        key = self.state_key(mailbox)
        body = state.to_bytes()

        def put() -> str:
            request: PutObjectRequestTypeDef = {
                "Bucket": self.bucket,
                "Key": key,
                "Body": body,
                "ContentType": "application/json",
            }
            # Only over the version read, or where there is none yet.
            if etag is None:
                request["IfNoneMatch"] = "*"
            else:
                request["IfMatch"] = etag
            return self.client.put_object(**request)["ETag"]

        try:
            new_etag = self._bounded(f"write s3://{self.bucket}/{key}", put)
        except (ClientError, BotoCoreError) as exc:
            if _is(exc, _CONFLICT) or (etag is not None and _is(exc, _GONE)):
                raise _Conflict from exc
            raise StoreError(f"cannot write run state s3://{self.bucket}/{key}: {exc}") from exc
        return Snapshot(state.copy(), new_etag)

    def _bounded(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, or StoreError once the deadline comes first."""
        if self.time_left is None:
            return call()
        left = self.time_left()
        if left <= 0:
            raise StoreError(f"no time left to {what}")
        outcome: Future[T] = Future()

        def work() -> None:
            try:
                outcome.set_result(call())
            except BaseException as exc:  # handed to the waiting caller
                outcome.set_exception(exc)

        threading.Thread(target=work, name="state-store-call", daemon=True).start()
        try:
            return outcome.result(timeout=left)
        except TimeoutError as exc:
            raise StoreError(f"gave up trying to {what}: the run's deadline came first") from exc


def _parse(body: bytes | None) -> MailboxState:
    if body is None:
        raise StateDamaged(f"run state is larger than {_MAX_STATE_BYTES} bytes")
    return MailboxState.from_bytes(body)


def _is(exc: ClientError | BotoCoreError, kind: tuple[frozenset[str], frozenset[int]]) -> bool:
    if not isinstance(exc, ClientError):
        return False  # no answer from S3 at all
    codes, statuses = kind
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in codes or code in {str(s) for s in statuses} or status in statuses
