"""Raw RFC 5322 test messages, with the exact bytes that should land in S3.

Maildir stores LF line endings and Dovecot serves CRLF, so every message has
two forms: ``raw_for_maildir`` (what ``DovecotServer.deliver`` writes) and
``expected`` (CRLF, what POP3 RETR yields after dot-unstuffing, and what the
ingester must store byte for byte).
"""

from __future__ import annotations

import base64
import functools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header, decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import format_datetime

CRLF = b"\r\n"
MAILBOX_ADDRESS = "alice@example.test"
_BASE_DATE = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class CorpusMessage:
    name: str
    raw_for_maildir: bytes  # LF line endings, as an MDA writes into Maildir
    expected: bytes  # CRLF line endings, as RETR returns it and S3 should hold it
    subject: str  # decoded (RFC 2047 resolved)
    message_id: str  # including the angle brackets
    from_addr: str
    to_addr: str
    date: str

    @property
    def size(self) -> int:
        return len(self.expected)

    @classmethod
    def from_crlf(cls, name: str, raw: bytes, *, final_newline: bool = True) -> CorpusMessage:
        """Build from CRLF bytes. ``final_newline=False`` strips the last line break from
        the Maildir form (the server adds it back, so ``expected`` keeps it)."""
        if not raw.endswith(CRLF):
            raise ValueError("pass the expected bytes, ending with CRLF")
        lf = raw.replace(CRLF, b"\n")
        if not final_newline:
            lf = lf[:-1]
        headers = BytesHeaderParser().parsebytes(raw)
        return cls(
            name=name,
            raw_for_maildir=lf,
            expected=raw,
            subject=str(make_header(decode_header(headers.get("Subject", "")))),
            message_id=str(headers.get("Message-ID", "")),
            from_addr=str(headers.get("From", "")),
            to_addr=str(headers.get("To", "")),
            date=str(headers.get("Date", "")),
        )


def _headers(i: int, subject: str, extra: list[str] | None = None) -> list[str]:
    return [
        f"From: Test Sender <sender{i}@example.org>",
        f"To: {MAILBOX_ADDRESS}",
        f"Subject: {subject}",
        f"Date: {format_datetime(_BASE_DATE + timedelta(minutes=i))}",
        f"Message-ID: <msg-{i}@pop3-ingest.test>",
        "MIME-Version: 1.0",
        *(extra or ["Content-Type: text/plain; charset=us-ascii"]),
    ]


def _join(header_lines: list[str], body: bytes) -> bytes:
    return CRLF.join(line.encode("ascii") for line in header_lines) + CRLF + CRLF + body


def simple_message(i: int) -> bytes:
    """A small plain-text message (CRLF). Distinct per ``i``: subject, Message-ID, date."""
    body = f"This is test message {i}.\r\nNothing special here.\r\n".encode()
    return _join(_headers(i, f"Test message {i}"), body)


def big_message(i: int, size: int) -> bytes:
    """A message of exactly ``size`` bytes (CRLF lines), distinct per ``i``."""
    head = simple_message(i)
    line = b"%08d " % i + b"x" * 68 + CRLF
    filler = line * ((size - len(head)) // len(line) + 1)
    body = head + filler
    return body[: size - 2] + CRLF


def simple(i: int) -> CorpusMessage:
    """``simple_message(i)`` as a CorpusMessage."""
    return CorpusMessage.from_crlf(f"simple-{i}", simple_message(i))


def long_line_message(i: int = 101, length: int = 10_000) -> CorpusMessage:
    """One unbroken body line far beyond poplib's 2048-byte _MAXLINE."""
    body = b"x" * length + CRLF + b"after the long line" + CRLF
    return CorpusMessage.from_crlf("long-line", _join(_headers(i, "A very long line"), body))


def attachment_message(i: int = 104, payload_bytes: int = 2_250_000) -> CorpusMessage:
    """multipart/mixed with a base64 attachment (~3 MB encoded for the default size)."""
    payload = random.Random(i).randbytes(payload_bytes)  # deterministic, incompressible
    encoded = base64.encodebytes(payload).replace(b"\n", CRLF)  # 76-char lines
    boundary = "==pop3-ingest-test-boundary=="
    body = CRLF.join(
        [
            b"This is a multi-part message in MIME format.",
            f"--{boundary}".encode(),
            b"Content-Type: text/plain; charset=us-ascii",
            b"",
            b"See the attachment.",
            f"--{boundary}".encode(),
            b"Content-Type: application/octet-stream",
            b'Content-Disposition: attachment; filename="blob.bin"',
            b"Content-Transfer-Encoding: base64",
            b"",
            encoded.rstrip(CRLF),
            f"--{boundary}--".encode(),
            b"",
        ]
    )
    headers = _headers(
        i, "Big attachment", [f'Content-Type: multipart/mixed; boundary="{boundary}"']
    )
    return CorpusMessage.from_crlf("attachment-3mb", _join(headers, body))


@functools.cache
def _mixed() -> tuple[CorpusMessage, ...]:
    dot_body = CRLF.join([b"Lines that POP3 must dot-stuff:", b".", b"..", b".leading dot",
                          b"..two leading dots", b"...", b"end", b""])  # fmt: skip
    utf8_body = "Grüße aus Köln — ☃ 日本語のテキスト\r\nZweite Zeile: äöüß\r\n".encode()
    encoded_subject = Header("Grüße — Ümlaut-Test ✓", "utf-8").encode()
    return (
        long_line_message(101),
        CorpusMessage.from_crlf("dot-lines", _join(_headers(102, "Dots at line starts"), dot_body)),
        CorpusMessage.from_crlf(
            "utf8-8bit",
            _join(
                _headers(
                    103,
                    "Eight-bit body",
                    ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"],
                ),
                utf8_body,
            ),
        ),
        attachment_message(104),
        CorpusMessage.from_crlf(
            "no-final-newline",
            _join(_headers(105, "No final newline"), b"the last line has no line break\r\n"),
            final_newline=False,
        ),
        CorpusMessage.from_crlf(
            "encoded-subject",
            _join(_headers(106, encoded_subject), b"Subject is RFC 2047 encoded.\r\n"),
        ),
        CorpusMessage.from_crlf("headers-only", _join(_headers(107, "Empty body"), b"")),
    )


def mixed_corpus() -> list[CorpusMessage]:
    """Edge cases an ingester must store byte for byte (built once, ~3 MB)."""
    return list(_mixed())


def by_name(name: str) -> CorpusMessage:
    for message in _mixed():
        if message.name == name:
            return message
    raise KeyError(name)
