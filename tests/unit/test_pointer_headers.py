"""The pointer's loop and thread headers: Auto-Submitted, Precedence, Return-Path,
In-Reply-To, References, List-Id; cleaned and bounded like every header field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pop3_ingest.domain.message import StoredMessage, parse_header_fields

LOOP_AND_THREAD = {
    "auto_submitted": b"Auto-Submitted",
    "precedence": b"Precedence",
    "return_path": b"Return-Path",
    "in_reply_to": b"In-Reply-To",
    "references": b"References",
    "list_id": b"List-Id",
}
FIELD_LIMIT = 1000  # docs/pointer.md: at most 1000 characters


def head(*lines: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + b"\r\nbody\r\n"


def test_an_auto_reply_from_a_list_carries_what_stops_a_loop() -> None:
    fields = parse_header_fields(
        head(
            b"Return-Path: <bounces+123@lists.example.org>",
            b"Auto-Submitted: auto-replied",
            b"Precedence: bulk",
            b"List-Id: =?utf-8?q?Support_B=C3=BCro?= <support.lists.example.org>",
            b"In-Reply-To: <parent@example.com>",
            b"References: <root@example.com>\r\n <parent@example.com>",
        )
    )
    assert fields["return_path"] == "<bounces+123@lists.example.org>"
    assert fields["auto_submitted"] == "auto-replied"
    assert fields["precedence"] == "bulk"
    assert fields["list_id"] == "Support Büro <support.lists.example.org>"
    assert fields["in_reply_to"] == "<parent@example.com>"
    assert fields["references"] == "<root@example.com> <parent@example.com>"  # unfolded


def test_absent_headers_are_null_in_the_pointer() -> None:
    fields = parse_header_fields(head(b"Subject: hello"))
    pointer = StoredMessage(
        bucket="b",
        key="k",
        size=1,
        sha256="0" * 64,
        mailbox="m",
        uidl="u",
        headers=fields,
        stored_at=datetime(2026, 1, 1, tzinfo=UTC),
    ).pointer()
    for name in LOOP_AND_THREAD:
        assert name in pointer
        assert pointer[name] is None
    assert pointer["subject"] == "hello"


@pytest.mark.parametrize("name", sorted(LOOP_AND_THREAD))
def test_each_field_is_bounded_and_holds_only_what_sqs_accepts(name: str) -> None:
    header = LOOP_AND_THREAD[name]
    value = parse_header_fields(head(header + b": x\x01y " + b"z" * 5000))[name]
    assert value is not None
    assert value.startswith("x\ufffdy")
    assert len(value) <= FIELD_LIMIT


def test_long_references_keep_the_root_and_the_nearest_parents_whole() -> None:
    ids = [f"<{i:04d}.{'x' * 40}@example.com>" for i in range(60)]
    references = parse_header_fields(head(b"References: " + " ".join(ids).encode()))["references"]
    assert references is not None
    assert len(references) <= FIELD_LIMIT
    kept = references.split(" ")
    assert kept[0] == ids[0]
    assert kept[-1] == ids[-1]
    assert kept[1:] == ids[len(ids) - len(kept) + 1 :]  # whole ids, the latest ones
    assert len(kept) > 10


def test_references_that_are_not_a_list_of_ids_are_cut_like_any_field() -> None:
    value = parse_header_fields(head(b"References: " + b"y" * 3000))["references"]
    assert value == "y" * FIELD_LIMIT
