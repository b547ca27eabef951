"""What we make of one downloaded message: its key, its digest, its pointer."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.parser import HeaderParser
from email.policy import compat32
from typing import Any, Protocol

POINTER_VERSION = 1
# Headers end at the first empty line; we never keep more than this of them.
HEADER_LIMIT = 64 * 1024
_FIELD_LIMIT = 1000
# Starts with a letter or digit, so "_state/" and "_quarantine/" never collide.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SAFE_MAILBOX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


@dataclass(frozen=True)
class ServerMessage:
    """One entry of the mailbox listing: session number, UIDL and LIST size."""

    number: int
    uidl: str
    size: int
    # False when the UIDL cannot name this message alone (shared with another
    # message, empty, or a server without UIDL): it is then known by its
    # content digest, and fetched, stored and deleted within one session.
    unique: bool = True


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def object_key(prefix: str, mailbox: str, uidl: str) -> str:
    """Deterministic S3 key for one message of one mailbox.

    The UIDL is server text (any byte, ``/``, ``..``), so the key carries a
    digest of it instead: the same message always lands on the same key, and
    nothing the server says can steer where it lands.
    """
    if not _SAFE_MAILBOX.match(mailbox):
        raise ValueError(f"unsafe mailbox name {mailbox!r}")
    return f"{prefix}{mailbox}/{uidl_digest(uidl)}.eml"


def content_key(prefix: str, mailbox: str, sha256_hex: str) -> str:
    """Key for a message without a unique UIDL: named by its content digest.

    The "c-" keeps these apart from UIDL keys; the same bytes always land on
    the same key, so a repeated download never stores a second copy.
    """
    if not _SAFE_MAILBOX.match(mailbox):
        raise ValueError(f"unsafe mailbox name {mailbox!r}")
    return f"{prefix}{mailbox}/c-{sha256_hex}.eml"


def uidl_digest(uidl: str) -> str:
    """A fixed-length, key-safe stand-in for a UIDL (any server text)."""
    return hashlib.sha256(uidl.encode("latin-1", "replace")).hexdigest()[:40]


class CapturingReader:
    """Passes a message stream through, hashing it and keeping its header block."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._sha256 = hashlib.sha256()
        self._head = bytearray()
        self._head_complete = False
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._sha256.update(data)
        self.size += len(data)
        if not self._head_complete and data:
            self._head += data[: HEADER_LIMIT - len(self._head)]
            self._head_complete = b"\r\n\r\n" in self._head or len(self._head) >= HEADER_LIMIT
        return data

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def head(self) -> bytes:
        """The start of the message (at most the header limit)."""
        return bytes(self._head)

    def header_fields(self) -> dict[str, str | None]:
        return parse_header_fields(bytes(self._head))


def parse_header_fields(head: bytes) -> dict[str, str | None]:
    """The pointer's header fields, decoded (RFC 2047), bounded and made of characters
    SQS accepts (:func:`sqs_text`); None when absent."""
    end = head.find(b"\r\n\r\n")
    block = head if end < 0 else head[: end + 4]
    fields: dict[str, str | None] = dict.fromkeys(_POINTER_HEADERS)
    try:
        # compat32 parsing is several times cheaper than the modern policy;
        # only values that carry encoded words are decoded further.
        # Raw 8-bit headers (RFC 6532) are read as UTF-8.
        parsed = HeaderParser(policy=compat32).parsestr(block.decode("utf-8", "replace"))
    except Exception:  # a broken header block must not lose the message
        return fields
    for name, header in _POINTER_HEADERS.items():
        value = parsed.get(header)
        if value is None:
            continue
        try:
            text = str(value)
            if "=?" in text:
                text = str(make_header(decode_header(value)))
        except Exception:  # malformed encoded words are common in spam
            text = str(value).encode("utf-8", "replace").decode("utf-8", "replace")
        bound = _bounded_ids if name in _ID_LISTS else _bounded
        fields[name] = sqs_text(bound(" ".join(text.split())))
    return fields


def _bounded(text: str) -> str:
    return text[:_FIELD_LIMIT]


def _bounded_ids(text: str) -> str:
    """A list of message ids (References) within the bound, cut between ids: the
    first (the thread's root) and as many of the last (the nearest parents) as fit."""
    if len(text) <= _FIELD_LIMIT:
        return text
    first, *rest = text.split(" ")
    if len(first) > _FIELD_LIMIT // 2:
        return text[:_FIELD_LIMIT]  # not a list of ids: cut like any other field
    kept: list[str] = []
    room = _FIELD_LIMIT - len(first)
    for item in reversed(rest):
        if len(item) + 1 > room:
            break
        kept.append(item)
        room -= len(item) + 1
    return " ".join([first, *reversed(kept)])


# What SQS accepts in a message body (XML 1.0's Char): tab, LF, CR, and
# U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF. Decoded headers can hold the
# rest: control characters, U+FFFE/U+FFFF, lone surrogates (an encoded word in
# "unknown-8bit"); SQS refuses a body with any of them (InvalidMessageContents).
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_text(text: str) -> str:
    """``text`` with every character SQS refuses replaced by U+FFFD."""
    return _NOT_SQS_TEXT.sub("\ufffd", text)


_POINTER_HEADERS = {
    "message_id": "Message-ID",
    "from": "From",
    "to": "To",
    "cc": "Cc",
    "subject": "Subject",
    "date": "Date",
    # What a consumer needs to stop auto-reply loops (RFC 3834, RFC 2076's
    # Precedence, the envelope sender) and to thread (RFC 5322, RFC 2919).
    "auto_submitted": "Auto-Submitted",
    "precedence": "Precedence",
    "return_path": "Return-Path",
    "in_reply_to": "In-Reply-To",
    "references": "References",
    "list_id": "List-Id",
}
# Fields that hold a list of message ids: bounded between ids, not inside one.
_ID_LISTS = frozenset({"references"})


@dataclass(frozen=True)
class StoredObject:
    """What the store knows of an existing object."""

    size: int
    sha256: str | None


@dataclass(frozen=True)
class StoredMessage:
    bucket: str
    key: str
    size: int
    sha256: str
    mailbox: str
    uidl: str
    headers: dict[str, str | None]
    stored_at: datetime

    def pointer(self) -> dict[str, Any]:
        """The SQS body our users' consumers code against (docs/pointer.md)."""
        return {
            "version": POINTER_VERSION,
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "mailbox": self.mailbox,
            "uidl": self.uidl,
            **self.headers,
            "stored_at": self.stored_at.astimezone(UTC).isoformat(timespec="seconds"),
        }


def failure_key(message: ServerMessage) -> str:
    """Where a message's failures and quarantine are remembered.

    A unique UIDL names the message. Without one (shared or missing UIDLs) the
    UIDL text and size are the best name there is before download.
    """
    if message.unique:
        return uidl_digest(message.uidl)
    return uidl_digest(f"\x00shared\x00{message.uidl}\x00{message.size}")


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None
