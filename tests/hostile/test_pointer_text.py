"""Pointer text SQS accepts, whatever the headers hold (issue 8, hole 8).

Real SQS refuses a body with a character outside its set; the session's moto
server enforces that rule (``tests/support/moto_server.py``, strict by
default). Messages whose Subject or From carry control characters, U+FFFE,
U+FFFF, undecodable bytes or RFC 2047 encoded words that decode to those must
all be announced, and the mailbox drained: one refused pointer would leave its
message on the server, failing first on every run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.fake_pop3 import FakeMessage
from tests.support.harness import HostileHarness
from tests.support.moto_server import SQS_MAX_PAYLOAD_BYTES, AwsResources, sqs_body_problem

from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer

pytestmark = pytest.mark.integration

# (Subject, From) header values as raw bytes on the wire.
HOSTILE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"controls \x00\x01\x02\x03\x04\x05\x06\x07\x08 end", b"x\x0b\x0c\x0e\x1f@example.com"),
    ("non-characters \ufffe and \uffff".encode(), "\ufffe <a@example.com>".encode()),
    (b"undecodable \xff\xfe\xc3( \xed\xa0\x80 bytes", b"\x80\x81 <b@example.com>"),
    (b"=?utf-8?b?" + "\ufffe\uffff".encode().hex().encode() + b"?= hex, not base64", b"c@x"),
    (b"=?utf-8?q?=EF=BF=BE=EF=BF=BF_and_=00=01?=", b"=?utf-8?q?=EF=BF=BF?= <d@example.com>"),
    (b"=?unknown-8bit?q?=FF=FE=80?= surrogates", b"=?unknown-8bit?b?/w==?= <e@example.com>"),
    (b"=?x-unknown?q?=FF?= =?utf-8?b?77++?=", b"=?iso-8859-1?q?=00=1F?= <f@example.com>"),
]


def message(index: int, subject: bytes, sender: bytes) -> bytes:
    return (
        b"From: " + sender + b"\r\n"
        b"To: rcpt@example.com\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Message-ID: <hostile-" + str(index).encode() + b"@example.com>\r\n"
        b"Date: Wed, 01 May 2024 08:00:00 +0000\r\n"
        b"\r\n"
        b"Body of message " + str(index).encode() + b".\r\n"
    )


def test_every_message_with_hostile_headers_is_announced_and_the_mailbox_drains(
    hostile: HostileHarness,
) -> None:
    mail = [
        FakeMessage(message(i, subject, sender), b"hostile-%d" % i)
        for i, (subject, sender) in enumerate(HOSTILE_HEADERS)
    ]
    fake = hostile.serve(mail)
    refused_before = len(hostile.aws.moto.sqs_rejections)
    outcome = hostile.attempt()
    hostile.check(outcome)
    assert hostile.aws.moto.sqs_rejections[refused_before:] == []
    assert outcome.summary is not None
    assert outcome.summary["announced"] == len(mail)
    assert len(fake.committed) == len(mail)  # nothing left to fail again next run
    pointers = hostile.aws.receive_all()
    assert sorted(p["uidl"] for p in pointers) == sorted(f"hostile-{i}" for i in range(len(mail)))
    for pointer in pointers:
        assert sqs_body_problem(json.dumps(pointer, ensure_ascii=False)) is None
    subjects = " ".join(str(p["subject"]) for p in pointers)
    assert "\ufffd" in subjects  # replaced, not dropped


def test_the_strict_sqs_server_refuses_what_real_sqs_refuses(aws: AwsResources) -> None:
    # The oracle itself: without it the test above would prove nothing.
    response = aws.sqs.send_message_batch(
        QueueUrl=aws.queue_url,
        Entries=[
            {"Id": "ok", "MessageBody": '{"subject":"fine \\u0000 escaped"}'},
            {"Id": "fffe", "MessageBody": '{"subject":"\ufffe"}'},
            {"Id": "surrogate", "MessageBody": '{"subject":"\udcff"}'},
        ],
    )
    assert [s["Id"] for s in response["Successful"]] == ["ok"]
    assert {f["Id"]: f["Code"] for f in response["Failed"]} == {
        "fffe": "InvalidMessageContents",
        "surrogate": "InvalidMessageContents",
    }


def largest_pointer(index: int) -> dict[str, Any]:
    """A pointer at every bound at once: header fields of 1000 four-byte characters,
    a UIDL of 2048 control characters (6 bytes each once JSON-escaped)."""
    field = "\U0001f600" * 1000
    return {
        "version": 1,
        "bucket": "mail-bucket",
        "key": "mail/m/" + "0" * 40 + ".eml",
        "size": 10**12,
        "sha256": "f" * 64,
        "mailbox": "m",
        "uidl": "\x01" * 2048,
        "message_id": field,
        "from": field,
        "to": field,
        "cc": field,
        "subject": field + str(index),
        "date": field,
        "stored_at": "2024-05-01T08:00:00+00:00",
    }


def test_a_batch_of_the_largest_pointers_stays_within_sqs_limits(aws: AwsResources) -> None:
    pointers = [largest_pointer(i) for i in range(10)]
    total = sum(len(json.dumps(p, ensure_ascii=False).encode()) for p in pointers)
    assert total > SQS_MAX_PAYLOAD_BYTES  # one call could not carry them
    refused_before = len(aws.moto.sqs_rejections)
    failed = SqsAnnouncer(aws.sqs, aws.queue_url).announce_batch(pointers)
    assert failed == set()
    assert aws.moto.sqs_rejections[refused_before:] == []
    received = aws.receive_all()
    assert sorted(p["subject"][-1] for p in received) == [str(i) for i in range(10)]
