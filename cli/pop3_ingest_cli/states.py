"""Mailboxes' run states read from S3 without side effects, and Mode fleet's tagged secrets.

The function's state store (:class:`~pop3_ingest.integrations.s3_state.S3StateStore`)
names the keys and makes the conditional writes; reading here is a plain GET
parsed by :meth:`MailboxState.from_bytes`, because the store's own read sets
a damaged document aside (a write), and ``status`` changes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pop3_ingest.config import (
    DEFAULT_MAILBOX_TAG_KEY,
    DEFAULT_MAILBOX_TAG_VALUE,
    FleetSettings,
    MailboxConfig,
)
from pop3_ingest.domain.reconcile import SECRETS_PER_READ
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.errors import SecretError, StateDamaged
from pop3_ingest.integrations.s3_state import S3StateStore, Snapshot
from pop3_ingest.integrations.scheduler import TaggedSecrets
from pop3_ingest_cli.progress import Progress

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})


@dataclass(frozen=True)
class StoredState:
    """One mailbox's state document as read: None when there is none."""

    mailbox: str
    state: MailboxState | None
    etag: str | None = None
    damaged: str | None = None

    def snapshot(self) -> Snapshot:
        """The base of a conditional write over exactly this version."""
        return Snapshot(self.state or MailboxState(), self.etag)


@dataclass(frozen=True)
class StateReader:
    """``<prefix>_state/<mailbox>.json`` of one bucket and prefix."""

    s3: S3Client
    bucket: str
    prefix: str

    @property
    def store(self) -> S3StateStore:
        return S3StateStore(self.s3, self.bucket, self.prefix)

    @property
    def folder(self) -> str:
        """``<prefix>_state/``: where the state documents are (the store names the keys)."""
        return self.store.state_key("").removesuffix(".json")

    def location(self, mailbox: str) -> str:
        return f"s3://{self.bucket}/{self.store.state_key(mailbox)}"

    def mailboxes(self) -> list[str]:
        """Every mailbox with a state document, sorted (set-aside damaged copies are not)."""
        names = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.folder, Delimiter="/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(self.folder) :]
                if name.endswith(".json") and len(name) > len(".json"):
                    names.append(name.removesuffix(".json"))
        return sorted(names)

    def read(self, mailbox: str) -> StoredState:
        """The state as stored; a damaged one is reported, never set aside."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.store.state_key(mailbox))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING:
                return StoredState(mailbox, None)
            raise
        etag, body = response["ETag"], response["Body"].read()
        try:
            return StoredState(mailbox, MailboxState.from_bytes(body), etag)
        except StateDamaged as exc:
            return StoredState(mailbox, None, etag, damaged=str(exc))


# -- Mode fleet: which mailbox each tagged secret is ------------------------------


def tag_settings() -> FleetSettings:
    """The mailbox tag (MAILBOX_TAG_KEY/MAILBOX_TAG_VALUE, as for ``mailbox``); nothing else."""
    return FleetSettings(
        schedule_group="",
        jobs_queue_arn="",
        scheduler_role_arn="",
        mailbox_tag_key=os.environ.get("MAILBOX_TAG_KEY", "").strip() or DEFAULT_MAILBOX_TAG_KEY,
        mailbox_tag_value=os.environ.get("MAILBOX_TAG_VALUE", "").strip()
        or DEFAULT_MAILBOX_TAG_VALUE,
    )


@dataclass(frozen=True)
class TaggedMailbox:
    secret: str  # the secret's name
    fingerprint: str  # MailboxConfig.fingerprint(): has the secret changed since a failure?


@dataclass
class Directory:
    """The tagged secrets by mailbox name, and those that name no usable mailbox."""

    mailboxes: dict[str, TaggedMailbox] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)  # secret name -> why

    def add(self, secret: str, text: str | None, error: str | None) -> None:
        if text is None:
            self.unusable[secret] = error or "not returned by BatchGetSecretValue"
            return
        try:
            config = MailboxConfig.from_secret(json.loads(text))
        except ValueError:
            self.unusable[secret] = "the secret is not JSON"
            return
        except SecretError as exc:  # names the field, never a value
            self.unusable[secret] = str(exc)
            return
        first = self.mailboxes.get(config.mailbox)
        if first is not None:
            self.unusable[secret] = f"names mailbox {config.mailbox!r}, as {first.secret} does"
            return
        self.mailboxes[config.mailbox] = TaggedMailbox(secret, config.fingerprint())


def _batches(names: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(names), SECRETS_PER_READ):
        yield names[start : start + SECRETS_PER_READ]


def tagged_mailboxes(client: SecretsManagerClient, progress: Progress) -> Directory:
    """Every tagged secret, read (BatchGetSecretValue) to learn the mailbox it names."""
    secrets = TaggedSecrets(client, tag_settings())
    progress.note("listing the tagged mailbox secrets")
    names = sorted(secret.name for secret in secrets.tagged())
    directory = Directory()
    for batch in _batches(names):
        values = secrets.read(batch)
        for name in batch:
            directory.add(name, values.values.get(name), values.errors.get(name))
        progress.step(
            "reading mailbox secrets",
            len(directory.mailboxes) + len(directory.unusable),
            len(names),
        )
    progress.done()
    return directory
