"""The fetch function against popa3d: no CAPA, no PIPELINING, mbox, header-derived UIDLs.

popa3d's UIDL is an MD5 of the Date, Message-ID and Received headers, so
duplicate deliveries and look-alike messages share one UIDL (issue 8, hole 14).
Such messages must still be drained in delete mode (the bytes just hashed are
the proof for their DELE) and announced once each, by content digest, in keep
mode. Expected bytes are what a plain poplib RETR returned before the run:
popa3d serves mbox text with its ``>From `` quotes and a final CRLF.
"""

from __future__ import annotations

import poplib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support import corpus
from tests.support.harness import HandlerHarness, sha256
from tests.support.moto_server import AwsResources
from tests.support.popa3d import Popa3dMailbox, ServedMessage, served_form

pytestmark = pytest.mark.integration

MAILBOX_NAME = "popa3d"


def _message(headers: list[str], body: list[str]) -> bytes:
    return "\r\n".join([*headers, "", *body, ""]).encode("ascii")


def colliding_corpus() -> list[bytes]:
    """Eleven messages popa3d lists under five UIDLs.

    - the same message delivered three times (identical bytes);
    - three alerts with one Date and no Message-ID, differing only in body
      (one body has a ``From `` line the mbox must quote, one a ``>From `` line);
    - three unrelated messages with neither Date nor Message-ID;
    - two ordinary messages with UIDLs of their own.
    Twins are spread out so no two sit next to each other in the listing.
    """
    duplicate = corpus.simple_message(301)
    alert_headers = [
        "From: Monitoring <monitor@example.org>",
        f"To: {corpus.MAILBOX_ADDRESS}",
        "Subject: [ALERT] disk almost full",
        "Date: Wed, 01 May 2024 08:00:00 +0000",
    ]
    alerts = [
        _message(alert_headers, ["host db1: /var at 91%"]),
        _message(alert_headers, ["host db2: /var at 97%", "From now on writes may fail."]),
        _message(alert_headers, ["host db3: /var at 99%", ">From the runbook: rotate logs."]),
    ]
    undated = [
        _message(
            [
                f"From: Sender {i} <s{i}@example.org>",
                f"To: {corpus.MAILBOX_ADDRESS}",
                f"Subject: no Date, no Message-ID ({i})",
            ],
            [f"Message {i} carries neither header."],
        )
        for i in range(3)
    ]
    unique = [corpus.simple_message(302), corpus.simple_message(303)]
    return [
        duplicate, alerts[0], undated[0], unique[0], duplicate, alerts[1],
        undated[1], alerts[2], duplicate, unique[1], undated[2],
    ]  # fmt: skip


@dataclass(kw_only=True)
class Popa3dRun(HandlerHarness):
    """The real handler, configured for one popa3d mailbox, with moto behind it."""

    mailbox: Popa3dMailbox

    def configure_mailbox(self, **secret: Any) -> str:
        """Point the function at the popa3d mailbox (``secret`` overrides its fields)."""
        secret = self.mailbox.secret(mailbox=MAILBOX_NAME, **secret)
        return self.configure(secret, DEADLINE_MARGIN_SECONDS="2")


@pytest.fixture
def popa3d_run(
    popa3d: Popa3dMailbox, aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> Popa3dRun:
    return Popa3dRun(mailbox=popa3d, user=popa3d.user, aws=aws, monkeypatch=monkeypatch)


def assert_pointers_name_their_objects(
    pointers: list[dict[str, Any]], objects: dict[str, bytes]
) -> None:
    for pointer in pointers:
        body = objects[pointer["key"]]
        assert pointer["sha256"] == sha256(body)
        assert pointer["size"] == len(body)
        assert pointer["mailbox"] == MAILBOX_NAME


def digest_counts(digests: Iterable[str]) -> Counter[str]:
    """Pointers (or messages) per content, keyed by a digest prefix readable in a diff."""
    return Counter(digest[:12] for digest in digests)


def shared_uidls(served: list[ServedMessage]) -> int:
    """How many messages share their UIDL with another one."""
    return sum(n for n in Counter(m.uidl for m in served).values() if n > 1)


def test_popa3d_has_no_capa_and_derives_uidls_from_a_few_headers(popa3d: Popa3dMailbox) -> None:
    # GIVEN the colliding corpus in a popa3d mbox
    raws = colliding_corpus()
    popa3d.deliver_all(raws)

    # WHEN a plain client asks for capabilities and reads everything
    with popa3d.client() as client, pytest.raises(poplib.error_proto, match="-ERR"):
        client.capa()
    served = popa3d.served()

    # THEN no extension is on offer, twins share UIDLs, and the bytes served are
    # the delivered ones as mbox text (quoted From lines, CRLF, final CRLF)
    assert sorted(Counter(m.uidl for m in served).values()) == [1, 1, 3, 3, 3]
    assert [m.data for m in served] == [served_form(raw) for raw in raws]
    assert any(b"\r\n>From now on" in m.data for m in served)
    assert popa3d.message_count() == len(raws)  # reading deleted nothing


def test_delete_mode_drains_messages_sharing_a_uidl_byte_exact(popa3d_run: Popa3dRun) -> None:
    # GIVEN a mailbox where nine of eleven messages share their UIDL with another
    mailbox, aws = popa3d_run.mailbox, popa3d_run.aws
    mailbox.deliver_all(colliding_corpus())
    before = mailbox.served()
    assert shared_uidls(before) == 9
    popa3d_run.configure_mailbox()

    # WHEN one run ingests it
    summary = popa3d_run.run()

    # THEN the mbox is empty, every message is stored byte-exact as popa3d served
    # it, and each content has exactly one pointer: an identical copy is proven
    # stored and announced by the first one, as in keep mode
    assert len(mailbox.remaining()) == 0, f"left on the server; run summary: {summary}"
    assert summary["stopped"] == "completed"
    assert summary["failed"] == 0
    assert summary["left_on_server"] == 0
    objects = popa3d_run.mail_objects()
    assert set(objects.values()) == {m.data for m in before}
    pointers = aws.receive_all()
    assert digest_counts(p["sha256"] for p in pointers) == digest_counts(
        {sha256(m.data) for m in before}
    ), f"pointers per content; run summary: {summary}"
    assert_pointers_name_their_objects(pointers, objects)

    # AND a second run finds nothing to store or announce
    popa3d_run.run()
    assert aws.receive_all() == []
    assert popa3d_run.mail_objects() == objects


def test_keep_mode_announces_each_content_once_across_runs(popa3d_run: Popa3dRun) -> None:
    # GIVEN the colliding corpus and a mailbox secret that keeps mail on the server
    mailbox, aws = popa3d_run.mailbox, popa3d_run.aws
    mailbox.deliver_all(colliding_corpus())
    before = mailbox.served()
    mbox_before = mailbox.remaining()
    distinct = {sha256(m.data) for m in before}
    assert shared_uidls(before) == 9
    popa3d_run.configure_mailbox(delete=False)

    # WHEN it runs
    first = popa3d_run.run()

    # THEN every distinct content is stored and announced exactly once (the
    # identical copies are one content), and nothing leaves the server
    pointers = aws.receive_all()
    assert digest_counts(p["sha256"] for p in pointers) == digest_counts(distinct), (
        f"pointers per content; run summary: {first}"
    )
    objects = popa3d_run.mail_objects()
    assert set(objects.values()) == {m.data for m in before}
    assert_pointers_name_their_objects(pointers, objects)
    assert mailbox.remaining() == mbox_before

    # AND the next run announces nothing new and stores nothing new
    second = popa3d_run.run()
    assert aws.receive_all() == [], f"run summary: {second}"
    assert popa3d_run.mail_objects() == objects
    assert mailbox.remaining() == mbox_before


def test_plain_mailbox_with_unique_uidls_is_drained_byte_exact(popa3d_run: Popa3dRun) -> None:
    # GIVEN the edge-case corpus (long lines, dot lines, 8-bit, 3 MB attachment,
    # no final newline), where every message has its own Date and Message-ID
    mailbox, aws = popa3d_run.mailbox, popa3d_run.aws
    messages = [*corpus.mixed_corpus(), corpus.simple(1), corpus.simple(2)]
    mailbox.deliver_all([m.expected for m in messages])
    with mailbox.client() as client:
        uidls = {line.split()[1].decode() for line in client.uidl()[1]}
    assert len(uidls) == len(messages)
    popa3d_run.configure_mailbox()

    # WHEN one run ingests it over popa3d's plain RFC 1939 dialogue
    summary = popa3d_run.run()

    # THEN all are stored byte-exact as served, one pointer each, none left
    assert summary["stopped"] == "completed"
    assert summary["stored"] == summary["deleted"] == len(messages)
    assert mailbox.remaining() == []
    objects = popa3d_run.mail_objects()
    assert sorted(objects.values()) == sorted(served_form(m.expected) for m in messages)
    pointers = aws.receive_all()
    assert len(pointers) == len(messages)
    assert {p["uidl"] for p in pointers} == uidls
    assert_pointers_name_their_objects(pointers, objects)
