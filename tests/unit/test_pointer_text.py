"""For any header bytes, the pointer body is JSON made only of characters SQS accepts,
and small enough that SQS takes it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pop3_ingest.domain.message import StoredMessage, parse_header_fields, sqs_text
from pop3_ingest.domain.ports import SQS_BATCH_SIZE
from pop3_ingest.integrations.sqs_announcer import MAX_PAYLOAD_BYTES, pointer_body

# SQS's rule written out again, independently of the package's own.
SQS_ALLOWED = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
HEADERS = [b"Subject", b"From", b"To", b"Cc", b"Message-ID", b"Date"]

encoded_word = st.builds(
    lambda charset, encoding, payload: b"=?" + charset + b"?" + encoding + b"?" + payload + b"?=",
    st.sampled_from([b"utf-8", b"unknown-8bit", b"iso-8859-1", b"x-bogus", b"utf-16"]),
    st.sampled_from([b"q", b"b", b"Q", b"B"]),
    st.one_of(
        st.binary(max_size=30).map(lambda raw: b"".join(b"=%02X" % byte for byte in raw)),
        st.sampled_from([b"77++", b"77+/", b"/w==", b"AAE=", b"7aCA", b"2D3eAA=="]),
        st.binary(max_size=20),
    ),
)
header_value = st.lists(
    st.one_of(
        encoded_word,
        st.binary(max_size=40),
        st.sampled_from(["\ufffe".encode(), "\uffff".encode(), b"\xed\xa0\x80", b"\x00"]),
    ),
    max_size=6,
).map(b" ".join)
header_block = st.lists(
    st.tuples(st.sampled_from(HEADERS), header_value), min_size=1, max_size=8
).map(lambda fields: b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n")


def stored(head: bytes, uidl: str = "u1") -> StoredMessage:
    return StoredMessage(
        bucket="mail-bucket",
        key="mail/m/" + "0" * 40 + ".eml",
        size=len(head),
        sha256="0" * 64,
        mailbox="m",
        uidl=uidl,
        headers=parse_header_fields(head),
        stored_at=datetime(2024, 5, 1, tzinfo=UTC),
    )


@settings(max_examples=500, deadline=None)
@given(head=st.one_of(header_block, st.binary(max_size=400)))
def test_any_header_bytes_give_a_pointer_body_sqs_accepts(head: bytes) -> None:
    body = pointer_body(stored(head).pointer())
    assert SQS_ALLOWED.fullmatch(body)
    assert json.loads(body)["bucket"] == "mail-bucket"


@settings(max_examples=300, deadline=None)
@given(head=header_block)
def test_the_header_fields_themselves_hold_only_sqs_characters(head: bytes) -> None:
    for value in parse_header_fields(head).values():
        assert value is None or SQS_ALLOWED.fullmatch(value)


@settings(max_examples=200, deadline=None)
@given(uidl=st.binary(min_size=1, max_size=70).map(lambda raw: raw.decode("latin-1")))
def test_any_uidl_is_kept_exactly_in_a_valid_body(uidl: str) -> None:
    body = pointer_body(stored(b"Subject: x\r\n\r\n", uidl).pointer())
    assert SQS_ALLOWED.fullmatch(body)
    assert json.loads(body)["uidl"] == uidl  # escaped by JSON, never altered


@given(text=st.text())
def test_sqs_text_replaces_exactly_the_refused_characters(text: str) -> None:
    cleaned = sqs_text(text)
    assert SQS_ALLOWED.fullmatch(cleaned)
    assert len(cleaned) == len(text)
    for before, after in zip(text, cleaned, strict=True):
        assert after == before or (after == "\ufffd" and not SQS_ALLOWED.fullmatch(before))


def test_the_largest_possible_pointer_fits_sqs_limit_for_one_message() -> None:
    # Every header at its 1000-character bound in four-byte characters, and a
    # UIDL of a full listing line (2048 bytes) of control characters.
    field = "\U0001f600" * 5000
    head = b"".join(name + b": " + field.encode() + b"\r\n" for name in HEADERS) + b"\r\n"
    body = pointer_body(stored(head, "\x01" * 2048).pointer())
    assert len(body.encode()) <= MAX_PAYLOAD_BYTES
    # A batch of such pointers needs more than one call (the announcer splits it).
    assert SQS_BATCH_SIZE * len(body.encode()) > MAX_PAYLOAD_BYTES
