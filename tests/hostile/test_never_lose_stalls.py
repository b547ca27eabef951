"""Issue 8: never stall a mailbox, through the real handler (fake POP3 server, moto over HTTP).

The holes: 5 (a message that fails the same way on every run blocks the ones
behind it; a capped listing whose whole window is skipped), 10 (memory forgotten
on a partial listing), 11 (LOGIN-DELAY on the reconnect), 13 (the memory budget
counts LIST sizes, not the bytes held).
"""

from __future__ import annotations

import pytest
from tests.support.aws_hooks import MARGIN, Ledger, SlowAws, content_id
from tests.support.corpus import big_message, simple_message
from tests.support.fake_pop3 import FakeMessage
from tests.support.harness import DeadlineContext, HostileHarness, invoke, messages

pytestmark = pytest.mark.integration

POISON_THRESHOLD = 2
# Gmail lists about this many messages per session.
GMAIL_CAP = 250


def failed(outcomes: list[dict[str, object] | None]) -> int:
    """Message failures over these runs (the handler's summaries)."""
    return sum(int(str(s.get("failed", 0))) for s in outcomes if s is not None)


def quarantined(outcomes: list[dict[str, object] | None]) -> int:
    """Messages newly quarantined over these runs (the handler's summaries)."""
    return sum(int(str(s.get("quarantined", 0))) for s in outcomes if s is not None)


# -- hole 5: every failure counts against its message; the mailbox moves on -------


def test_connection_cut_while_streaming_counts_against_that_message(
    hostile: HostileHarness, ledger: Ledger, small_streams: int
) -> None:
    # GIVEN a streamed message whose download is cut half-way on every attempt,
    # ahead of ordinary mail
    hostile.monkeypatch.setenv("POISON_THRESHOLD", str(POISON_THRESHOLD))
    cut = FakeMessage(big_message(1, 4 * small_streams), b"cut-while-streaming")
    cut.cut_after = cut.size // 2
    rest = messages(3, start=2)
    fake = hostile.serve([cut, *rest])

    # WHEN the mailbox runs a few more times than the poison threshold
    for _ in range(POISON_THRESHOLD + 2):
        hostile.check(hostile.attempt())

    # THEN the cut message is set aside (still on the server) and the rest got through
    assert cut in fake.messages
    assert ledger.missing(rest) == [], "stalled behind the cut message"
    assert not any(m in fake.messages for m in rest)


def test_message_starting_with_a_status_line_does_not_stall_the_mailbox(
    hostile: HostileHarness,
    ledger: Ledger,
) -> None:
    # GIVEN a message whose first line reads like a POP3 status line, ahead of ordinary mail
    hostile.monkeypatch.setenv("POISON_THRESHOLD", str(POISON_THRESHOLD))
    odd = FakeMessage(b"+OK this line belongs to the message\r\n" + simple_message(1), b"odd")
    rest = messages(3, start=2)
    fake = hostile.serve([odd, *rest])

    # WHEN the mailbox runs a few more times than the poison threshold
    for _ in range(POISON_THRESHOLD + 2):
        hostile.check(hostile.attempt())

    # THEN the rest got through; the odd one is stored and announced, or left on the server
    assert ledger.missing(rest) == [], "stalled behind the message"
    assert odd in fake.messages or ledger.missing([odd]) == []


def test_capped_listing_whose_window_is_all_oversized_still_reaches_the_mail_after_it(
    hostile: HostileHarness,
    ledger: Ledger,
) -> None:
    # GIVEN a Gmail-like server (about 250 listed per session) whose oldest
    # 250 messages are all over max_message_size
    oversized = [FakeMessage(big_message(i, 2048), b"big-%04d" % i) for i in range(GMAIL_CAP)]
    rest = messages(3, start=1000)
    fake = hostile.serve([*oversized, *rest], gmail=True, listing_cap=GMAIL_CAP)
    hostile.configure(hostile.secret(max_message_size=1024))
    assert all(m.size <= 1024 for m in rest)

    # WHEN the mailbox runs a few times
    for _ in range(3):
        hostile.check(hostile.attempt())
        if not ledger.missing(rest):
            break

    # THEN the mail after the window was reached, and nothing was hidden unannounced
    assert ledger.missing(rest) == [], "never reached past a window of oversized mail"
    assert ledger.lost([*oversized, *rest], fake) == []


def test_capped_listing_whose_window_is_all_quarantined_still_reaches_the_mail_after_it(
    hostile: HostileHarness, ledger: Ledger, slow_aws: SlowAws
) -> None:
    # GIVEN a Gmail-like server (about 250 listed per session) whose oldest
    # 250 messages S3 refused once, so they were quarantined at once
    hostile.monkeypatch.setenv("POISON_THRESHOLD", "1")
    poison_size = 700
    window = [FakeMessage(big_message(i, poison_size), b"p-%04d" % i) for i in range(GMAIL_CAP)]
    rest = messages(3, start=1000)
    assert all(m.size != poison_size for m in rest)
    fake = hostile.serve([*window, *rest], gmail=True, listing_cap=GMAIL_CAP)
    # (a run stops after a few sessions that could not QUIT, so this takes a
    # few runs)
    summaries = []
    for _ in range(4):
        slow_aws.refuse("s3", "PutObject", lambda call: call.size == poison_size)
        attempt = invoke(hostile, slow_aws)
        hostile.check(attempt.outcome)
        summaries.append(attempt.outcome.summary)
        slow_aws.thaw()
        if quarantined(summaries) >= GMAIL_CAP:
            break
    assert quarantined(summaries) >= GMAIL_CAP

    # WHEN the mailbox runs a few more times, S3 healthy again
    slow_aws.thaw()
    for _ in range(3):
        hostile.check(invoke(hostile, slow_aws).outcome)
        if not ledger.missing(rest):
            break

    # THEN the mail after the window was reached, and nothing was hidden unannounced
    assert ledger.missing(rest) == [], "never reached past a window of quarantined mail"
    assert ledger.lost([*window, *rest], fake) == []


# -- hole 10: forget a UIDL only when a complete listing shows it gone ------------


def test_failures_are_remembered_while_a_capped_listing_does_not_show_the_message(
    hostile: HostileHarness,
) -> None:
    # GIVEN a server that lists newest first, about 250 at a time (a capped
    # listing), and a message that fails once
    hostile.monkeypatch.setenv("POISON_THRESHOLD", str(POISON_THRESHOLD))
    poison = FakeMessage(
        simple_message(1), b"poison", retr_status=b"-ERR [SYS/PERM] cannot read it\r\n"
    )
    fake = hostile.serve([poison], listing_cap=GMAIL_CAP)
    summaries = [hostile.attempt().summary]
    # ... then new mail fills the listing, so the next session does not show it
    fake.messages[:0] = messages(GMAIL_CAP, start=10)

    # WHEN it is listed again (in a later session or run) and fails once more
    for _ in range(POISON_THRESHOLD + 1):
        outcome = hostile.attempt()
        hostile.check(outcome)
        summaries.append(outcome.summary)
        if failed(summaries) >= POISON_THRESHOLD:
            break

    # THEN its earlier failure still counted: it is quarantined
    assert failed(summaries) >= POISON_THRESHOLD
    assert quarantined(summaries) == 1, "the failure count was forgotten"


def test_keep_mode_announces_each_message_once_across_capped_listings(
    hostile: HostileHarness,
    ledger: Ledger,
) -> None:
    # GIVEN keep mode (delete: false) and a server that lists newest first,
    # about 250 at a time (a capped listing)
    older = messages(2)
    fake = hostile.serve(older, listing_cap=GMAIL_CAP)
    hostile.configure(hostile.secret(delete=False))
    hostile.check(hostile.attempt())
    # ... new mail fills the listing for a run; then the user deletes it (webmail)
    newer = messages(GMAIL_CAP, start=10)
    fake.messages[:0] = newer
    hostile.check(hostile.attempt())
    for message in newer:
        fake.messages.remove(message)

    # WHEN the older messages are listed again
    hostile.check(hostile.attempt())

    # THEN each message was announced exactly once
    counts = ledger.announced()
    assert [m.uidl for m in older + newer if not counts[content_id(m.body)]] == []
    again = [m.uidl for m in older + newer if counts[content_id(m.body)] > 1]
    assert again == [], "announced again after a partial listing"


# -- hole 11: every login honours LOGIN-DELAY -------------------------------------


def test_reconnect_after_a_capped_listing_honours_login_delay(
    hostile: HostileHarness, ledger: Ledger
) -> None:
    # GIVEN a Gmail-like server with more mail than one listing shows, that
    # asks for 15 minutes between logins (and refuses sooner ones)
    mail = messages(GMAIL_CAP + 5)
    fake = hostile.serve(
        mail,
        gmail=True,
        listing_cap=GMAIL_CAP,
        extra_capabilities=["LOGIN-DELAY 900"],
        enforce_login_delay=900,
    )

    # WHEN one run drains the first listing
    outcome = hostile.attempt()

    # THEN it did not log in again within the delay
    hostile.check(outcome)
    assert fake.login_delay_violations == 0
    assert fake.verbs().count("PASS") == 1
    assert ledger.lost(mail, fake) == []


# -- hole 13: the memory budget counts the bytes actually held ---------------------


def test_memory_budget_counts_the_bytes_held_not_the_listed_sizes(
    hostile: HostileHarness, slow_aws: SlowAws
) -> None:
    from pop3_ingest.domain.options import IngestOptions

    # GIVEN messages listed as 0 bytes that are nearly 1 MiB each, more of them
    # than the memory budget holds, and uploads that do not finish (so every
    # message read is held); enough upload threads that each held message is
    # an upload in progress
    budget = IngestOptions().memory_budget
    size = 960 * 1024
    mail = [
        FakeMessage(big_message(i, size), b"zero-%04d" % i, listed_size=0)
        for i in range(budget // size + 16)
    ]
    hostile.monkeypatch.setenv("UPLOAD_WORKERS", str(len(mail)))
    hostile.serve(mail)
    slow_aws.hold_from("s3", "PutObject", 1)
    context = DeadlineContext(remaining_ms=int((MARGIN + 3) * 1000))

    # WHEN the run reads what it can
    run = invoke(hostile, slow_aws, context)

    # THEN it never held more than the budget (plus the message that crossed it)
    hostile.check(run.outcome)
    assert slow_aws.calls["s3.PutObject"] > 0
    assert slow_aws.peak_held_bytes <= budget + size
