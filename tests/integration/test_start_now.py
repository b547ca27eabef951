"""start "now", delete_after_days and the status fields, end to end: the real handler,
a real Dovecot, moto over HTTP. Time moves through the clock the domain reads
(``time.time``), shifted for the whole process, moto included."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.integration.test_popa3d import Popa3dRun, colliding_corpus
from tests.support import corpus
from tests.support.harness import Harness
from tests.support.moto_server import AwsResources
from tests.support.popa3d import Popa3dMailbox

from pop3_ingest.errors import AuthError

pytestmark = pytest.mark.integration

DAY = 24 * 3600
MAILBOX = "support"


def deliver(harness: Harness, *numbers: int) -> None:
    for i in numbers:
        harness.dovecot.deliver(harness.user, corpus.simple(i).raw_for_maildir)


def configure(harness: Harness, **fields: Any) -> None:
    """The mailbox's secret, (re)written; read afresh by the next run (as after the
    5 minutes Powertools caches it)."""
    from aws_lambda_powertools.utilities import parameters

    harness.configure(harness.dovecot.secret(harness.user, mailbox=MAILBOX, **fields))
    clear: Callable[[], None] = parameters.clear_caches  # untyped upstream
    clear()


def saved_state(harness: Harness) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(harness.aws.get_object(f"mail/_state/{MAILBOX}.json"))
    return document


def subjects(pointers: list[dict[str, Any]]) -> list[str]:
    return sorted(str(p["subject"]) for p in pointers)


def move_clock(monkeypatch: pytest.MonkeyPatch, days: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + days * DAY)


def test_start_now_leaves_the_old_mail_alone_and_takes_only_later_mail(
    harness: Harness,
) -> None:
    deliver(harness, 1, 2, 3)
    configure(harness, start="now")
    old = harness.server_listing()

    first = harness.run()

    assert (first["stored"], first["announced"], first["deleted"]) == (0, 0, 0)
    assert harness.server_listing() == old  # untouched on the server
    assert harness.mail_keys() == []
    assert harness.aws.receive_all() == []
    state = saved_state(harness)
    assert len(state["baseline"]) == 3
    assert state["baseline_at"] > 0

    deliver(harness, 4)
    second = harness.run()

    assert (second["stored"], second["announced"], second["deleted"]) == (1, 1, 1)
    assert subjects(harness.aws.receive_all()) == [corpus.simple(4).subject]
    assert harness.server_listing() == old  # the old mail is still there, and only it
    assert saved_state(harness)["baseline_at"] == state["baseline_at"]  # taken once


def test_without_unique_uidls_old_mail_is_left_by_place_and_later_mail_taken(
    popa3d: Popa3dMailbox, aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN popa3d holding eleven messages under five UIDLs (three copies of one)
    run = Popa3dRun(mailbox=popa3d, user=popa3d.user, aws=aws, monkeypatch=monkeypatch)
    old = colliding_corpus()
    popa3d.deliver_all(old)
    before = popa3d.remaining()
    run.configure_mailbox(start="now")

    # WHEN the first run lists it, nothing is taken
    first = run.run()
    assert (first["announced"], first["deleted"]) == (0, 0)
    assert popa3d.remaining() == before

    # AND a fourth copy of the tripled message arrives, with one new message
    popa3d.deliver_all([old[0], corpus.simple_message(401)])
    second = run.run()

    # THEN those two are taken, and the old eleven stay as they were
    assert (second["announced"], second["deleted"]) == (2, 2)
    assert popa3d.remaining() == before
    assert len(aws.receive_all()) == 2


def test_switching_back_to_start_all_takes_the_old_mail(harness: Harness) -> None:
    deliver(harness, 1, 2)
    configure(harness, start="now")
    harness.run()
    configure(harness, start="all")
    summary = harness.run()
    assert summary["deleted"] == 2
    assert len(harness.aws.receive_all()) == 2
    assert saved_state(harness)["baseline"] == {}


def test_delete_after_days_announces_at_once_and_deletes_on_proof_days_later(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(harness, 1, 2)
    configure(harness, delete_after_days=2)
    listed = harness.server_listing()

    first = harness.run()
    assert (first["announced"], first["deleted"]) == (2, 0)
    assert harness.server_listing() == listed
    pointers = harness.aws.receive_all()
    assert subjects(pointers) == sorted(corpus.simple(i).subject for i in (1, 2))

    move_clock(monkeypatch, 1.9)
    assert harness.run()["deleted"] == 0  # not due yet, and not announced again
    assert harness.aws.receive_all() == []

    move_clock(monkeypatch, 0.2)  # 2.1 days after they were first announced
    due = harness.run()

    assert (due["deleted"], due["redeleted"], due["announced"]) == (2, 2, 0)
    assert harness.dovecot.message_count(harness.user) == 0
    assert harness.aws.receive_all() == []
    # What was deleted is exactly what was stored and announced.
    stored = harness.mail_objects()
    assert {p["key"] for p in pointers} == set(stored)


def test_a_failed_login_is_kept_for_status_without_the_password(harness: Harness) -> None:
    deliver(harness, 1)
    configure(harness)
    harness.run()  # a state to add the error to
    password = harness.dovecot.users[harness.user]
    configure(harness, password="wrong-" + password)
    with pytest.raises(AuthError):
        harness.run()
    state = saved_state(harness)
    assert state["last_error"].startswith("login failed:")
    assert state["last_error_at"] > 0
    assert password not in state["last_error"]
    assert state["pending"] == 0
