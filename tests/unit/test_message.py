"""Keys and pointer fields."""

from __future__ import annotations

import pytest

from pop3_ingest.domain.message import (
    HEADER_LIMIT,
    CapturingReader,
    object_key,
    parse_header_fields,
)


def test_key_is_deterministic_and_distinct() -> None:
    assert object_key("mail/", "box", "u1") == object_key("mail/", "box", "u1")
    assert object_key("mail/", "box", "u1") != object_key("mail/", "box", "u2")
    assert object_key("mail/", "box", "u1") != object_key("mail/", "other", "u1")


def test_key_refuses_unsafe_mailbox_name() -> None:
    with pytest.raises(ValueError, match="unsafe mailbox"):
        object_key("mail/", "../x", "u1")


def test_headers_decoded_and_missing_ones_are_none() -> None:
    head = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n"
        b"Subject: =?utf-8?b?w4RwZmVs?=\r\n"
        b"  and more\r\n"
        b"\r\nBody: not a header\r\n"
    )
    fields = parse_header_fields(head)
    assert fields["from"] == "Jürgen <j@example.com>"
    assert fields["subject"] == "Äpfel and more"
    assert fields["to"] is None
    assert fields["message_id"] is None


def test_garbage_headers_do_not_raise() -> None:
    fields = parse_header_fields(b"\x00\xff\xfe: ::\r\nFrom: <<<\r\n\r\n")
    assert set(fields) >= {"from", "to", "subject", "date", "message_id"}


def test_capturing_reader_limits_header_capture() -> None:
    import io

    body = b"Subject: x\r\n" + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\nbody"
    reader = CapturingReader(io.BytesIO(body))
    while reader.read(8192):
        pass
    assert reader.size == len(body)
    assert 0 < len(reader.head) <= HEADER_LIMIT


def test_raw_utf8_headers_are_kept_readable() -> None:
    fields = parse_header_fields("Subject: Grüße\r\nFrom: Jörg <j@example.com>\r\n\r\n".encode())
    assert fields["subject"] == "Grüße"
    assert fields["from"] == "Jörg <j@example.com>"
