"""Issue 8: never lose a message, through the real handler (fake POP3 server, moto over HTTP).

Each test states one rule of the issue and checks that rule, whatever the
numbers: "every message is announced or still offered", "nothing is deleted
whose bytes are not in S3". The holes: 1 (Gmail and the deadline), 2 (already
stored on size alone), 3 (in-run re-DELE without proof), 9 (deleted-memory).
"""

from __future__ import annotations

import pytest
from tests.support.aws_hooks import MARGIN, Call, Ledger, SlowAws
from tests.support.corpus import big_message, simple_message
from tests.support.fake_pop3 import FakeMessage, Fault
from tests.support.harness import DeadlineContext, HostileHarness, invoke, messages

pytestmark = pytest.mark.integration


# -- hole 1: Gmail hides whatever a session that ends with QUIT retrieved --------


@pytest.mark.parametrize(
    ("service", "operation", "nth"),
    [("s3", "PutObject", 5), ("sqs", "SendMessageBatch", 2)],
    ids=["s3-slow", "sqs-slow"],
)
def test_gmail_session_never_quits_with_unconfirmed_mail_at_the_deadline(
    hostile: HostileHarness,
    ledger: Ledger,
    slow_aws: SlowAws,
    service: str,
    operation: str,
    nth: int,
) -> None:
    # GIVEN a Gmail-like server, and AWS that turns slow at its nth call, just
    # as the deadline comes close
    mail = messages(30)
    fake = hostile.serve(mail, gmail=True)
    context = DeadlineContext(remaining_ms=60_000)
    slow_aws.hold_from(service, operation, nth, first=lambda: context.expire_in(MARGIN + 0.5))

    # WHEN the run meets the deadline with messages retrieved but not yet confirmed
    run = invoke(hostile, slow_aws, context)

    # THEN every message is announced or still offered
    hostile.check(run.outcome)
    assert ledger.lost(mail, fake) == [], "retrieved in a session that ended with QUIT"
    assert run.remaining_ms > 0, "returned after the Lambda deadline"
    # ... and once AWS is healthy again, later runs bring every message in.
    slow_aws.thaw()
    for _ in range(3):
        hostile.check(invoke(hostile, slow_aws).outcome)
        assert ledger.lost(mail, fake) == []
        if not ledger.missing(mail):
            break
    assert ledger.missing(mail) == []


def test_gmail_streamed_message_stored_just_at_the_deadline_is_not_hidden(
    hostile: HostileHarness, ledger: Ledger, slow_aws: SlowAws, small_streams: int
) -> None:
    # GIVEN a Gmail-like server whose second message is streamed, and whose
    # upload finishes only once the run's cut-off has passed
    mail = messages(3)
    streamed = FakeMessage(big_message(50, 4 * small_streams), b"uidl-big")
    mail.insert(1, streamed)
    fake = hostile.serve(mail, gmail=True)
    context = DeadlineContext(remaining_ms=60_000)

    def late_upload(call: Call) -> None:
        context.expire_in(MARGIN + 0.2)
        slow_aws.frozen.wait(0.5)  # past the cut-off, still before the deadline

    big = len(streamed.body)
    slow_aws.when("s3", "PutObject", lambda call: call.size >= big, late_upload)

    # WHEN the run goes on past the cut-off
    run = invoke(hostile, slow_aws, context)

    # THEN the streamed message is announced or still offered, like every other
    hostile.check(run.outcome)
    assert ledger.lost(mail, fake) == []
    assert run.remaining_ms > 0, "returned after the Lambda deadline"
    slow_aws.thaw()
    for _ in range(3):
        hostile.check(invoke(hostile, slow_aws).outcome)
        assert ledger.lost(mail, fake) == []
        if not ledger.missing(mail):
            break
    assert ledger.missing(mail) == []


# -- hole 2: "already stored" only on an equal SHA-256 ------------------------------


def test_streamed_message_reusing_a_uidl_and_size_is_not_taken_for_the_stored_one(
    hostile: HostileHarness, ledger: Ledger, small_streams: int
) -> None:
    # GIVEN a streamed message, stored and announced, whose DELE never committed
    size = 4 * small_streams
    old = FakeMessage(big_message(1, size), b"reused")
    fake = hostile.serve([old], faults=[Fault("DELE", "reset")])
    hostile.check(hostile.attempt())
    assert old.body in hostile.stored().values()
    assert fake.committed == []
    # ... then taken by another client; new mail of the very same size gets its UIDL
    fake.messages.remove(old)
    new = FakeMessage(big_message(2, size), b"reused")
    assert new.size == old.size
    assert new.body != old.body
    fake.messages.append(new)

    # WHEN the next runs meet it
    for _ in range(3):
        hostile.check(hostile.attempt())  # nothing deleted whose bytes are not in S3

    # THEN it is stored and announced as the new message it is, and the old
    # object is still there, unchanged
    stored = list(hostile.stored().values())
    assert new.body in stored, "the new message was never stored"
    assert old.body in stored, "the stored object was overwritten"
    assert ledger.missing([new]) == []


# -- hole 3: DELE only what this session proved equal to a stored object ----------


def test_lost_quit_answer_then_unstable_uidls_deletes_nothing_unproven(
    hostile: HostileHarness,
    ledger: Ledger,
) -> None:
    # GIVEN a server whose UIDLs are message numbers (unstable: after a
    # deletion they name other messages), that commits the first session's
    # QUIT and drops the line before its +OK, and a run that commits every
    # two messages
    hostile.monkeypatch.setenv("COMMIT_EVERY_MESSAGES", "2")
    # Sizes differ: a same-size newcomer under a deleted UIDL is another question (hole 9).
    mail = [FakeMessage(big_message(i, 400 + 10 * i), b"uidl-%04d" % i) for i in range(1, 7)]
    fake = hostile.serve(
        mail,
        faults=[Fault("QUIT-after-commit", "reset")],
        uidl_for=lambda session, number, message: b"%d" % number,
    )

    # WHEN the run goes on in a new session, where "1" and "2" are other messages
    outcome = hostile.attempt()

    # THEN nothing was deleted whose bytes are not in S3 ...
    hostile.check(outcome)
    assert "QUIT-after-commit" in {step for _, step, _ in fake.faults_applied}
    # ... and later runs still bring every message in.
    for _ in range(3):
        hostile.check(hostile.attempt())
    assert ledger.missing(mail) == []


# -- hole 9: "reappeared" means the same UIDL and the same size ---------------------


def test_deleted_uidl_back_with_another_size_is_new_mail(
    hostile: HostileHarness, ledger: Ledger
) -> None:
    # GIVEN a message stored, announced and deleted (its deletion remembered)
    first = FakeMessage(simple_message(1), b"1")
    fake = hostile.serve([first])
    hostile.check(hostile.attempt())
    assert fake.committed == [first]
    # ... and new mail under the same UIDL, of another size (a server that
    # numbers its UIDLs)
    newcomer = FakeMessage(simple_message(2) + b"A longer body this time.\r\n", b"1")
    assert newcomer.size != first.size
    fake.messages.append(newcomer)

    # WHEN the next runs see it
    for _ in range(2):
        hostile.check(hostile.attempt())

    # THEN it is stored and announced, not skipped as "reappeared"
    assert ledger.missing([newcomer]) == [], "skipped as if it had reappeared"
