"""The run state through the real handler: damage is set aside, one run per mailbox,
and a write that lost the race is merged, never overwriting.

Real Dovecot, moto over HTTP. Interference during a run comes from a hook on
the handler's own SQS client: the first pointer it sends is mid-run, after the
lease was taken and before the final save.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.support import corpus
from tests.support.harness import CapturedOutput, Harness, sha256

from pop3_ingest.domain.message import uidl_digest
from pop3_ingest.domain.state import MailboxState

pytestmark = pytest.mark.integration

MAILBOX = "box"
STATE_KEY = f"mail/_state/{MAILBOX}.json"
DAMAGED_PREFIX = f"mail/_state/damaged/{MAILBOX}."
FAILURE = {"count": 3, "error": "boom", "first_at": 1.0, "last_at": 2.0}


def setup(harness: Harness, count: int, **secret: Any) -> list[tuple[str, int]]:
    for i in range(1, count + 1):
        harness.dovecot.deliver(harness.user, corpus.simple(i).raw_for_maildir)
    harness.configure(harness.dovecot.secret(harness.user, mailbox=MAILBOX, **secret))
    return harness.server_listing()


def put_state(harness: Harness, body: bytes | dict[str, Any]) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    harness.aws.s3.put_object(Bucket=harness.aws.bucket, Key=STATE_KEY, Body=data)


def stored_state(harness: Harness) -> MailboxState:
    """The state as stored, read the way the function reads it."""
    return MailboxState.from_bytes(harness.aws.get_object(STATE_KEY))


def metric_total(output: CapturedOutput, name: str) -> float:
    total = 0.0
    for record in output.records():
        if "_aws" in record and name in record:
            value = record[name]
            total += sum(value) if isinstance(value, list) else value
    return total


def every_deleted_message_is_stored(harness: Harness, bodies: list[bytes]) -> None:
    """Proof of the one rule that matters: nothing leaves the server unstored."""
    stored = {sha256(body) for body in harness.mail_objects().values()}
    remaining = harness.dovecot.message_count(harness.user)
    missing = [b for b in bodies if sha256(b) not in stored]
    assert len(missing) <= remaining, "a message was deleted without being stored"


@pytest.fixture
def mid_run() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Run ``action`` once, when the handler sends its first pointer."""
    from pop3_ingest.handlers.fetch import aws_clients

    client = aws_clients().sqs
    registered: list[Any] = []

    def install(action: Callable[[], None]) -> None:
        done = threading.Event()

        def hook(**_: Any) -> None:
            if not done.is_set():
                done.set()
                action()

        client.meta.events.register("before-send.sqs.SendMessageBatch", hook)
        registered.append(hook)

    yield install
    for hook in registered:
        client.meta.events.unregister("before-send.sqs.SendMessageBatch", hook)


# -- (a) a damaged state is set aside, counted, and never trusted --------------------


def damaged_documents(listing: list[tuple[str, int]]) -> dict[str, bytes]:
    first = uidl_digest(listing[0][0])
    return {
        "garbage": b'{"version": 3, "seen": {',
        "short sha256": json.dumps(
            {"version": 3, "seen": {first: {"size": listing[0][1], "sha256": "ab" * 16}}}
        ).encode(),
        "quarantined of the wrong type": json.dumps(
            {"version": 3, "quarantined": {first: "quarantined"}}
        ).encode(),
    }


@pytest.mark.parametrize("kind", ["garbage", "short sha256", "quarantined of the wrong type"])
def test_a_damaged_state_is_set_aside_counted_and_the_run_starts_empty(
    harness: Harness, output: CapturedOutput, kind: str
) -> None:
    listing = setup(harness, 3)
    damaged = damaged_documents(listing)[kind]
    put_state(harness, damaged)

    summary = harness.run()

    assert summary["stopped"] == "completed"
    assert summary["stored"] == summary["deleted"] == 3  # nothing skipped on its word
    assert harness.dovecot.message_count(harness.user) == 0
    (aside,) = harness.aws.keys(DAMAGED_PREFIX)
    assert harness.aws.get_object(aside) == damaged  # kept for a post-mortem
    assert metric_total(output, "StateDamaged") == 1
    assert any(r.get("message", "").startswith("run state damaged") for r in output.records())
    # What the run wrote instead is a valid state, with its lease given back.
    state = stored_state(harness)
    assert state.lease_owner is None
    assert set(state.deleted) == {uidl_digest(uidl) for uidl, _ in listing}


@pytest.mark.parametrize(
    "document",
    [
        # Version 2 kept "<size>:<digest prefix>"; an empty prefix matched any bytes.
        lambda listing: {
            "version": 2,
            "seen": {uidl_digest(uidl): f"{size}:" for uidl, size in listing},
        },
        lambda listing: {
            "version": 3,
            "seen": {uidl_digest(uidl): {"size": size, "sha256": ""} for uidl, size in listing},
        },
    ],
    ids=["v2 empty prefix", "v3 empty sha256"],
)
def test_an_empty_digest_never_proves_a_message_stored(
    harness: Harness, document: Callable[[list[tuple[str, int]]], dict[str, Any]]
) -> None:
    bodies = [corpus.simple(i).expected for i in range(1, 4)]
    listing = setup(harness, 3)
    # The state claims every message was announced before, with no usable digest.
    put_state(harness, document(listing))

    summary = harness.run()

    every_deleted_message_is_stored(harness, bodies)
    assert summary["stored"] == 3
    assert len(harness.aws.receive_all()) == 3
    assert harness.dovecot.message_count(harness.user) == 0


def test_a_version_3_state_keeps_its_proofs_and_is_rewritten_as_version_5(
    harness: Harness,
) -> None:
    bodies = [corpus.simple(i).expected for i in range(1, 4)]
    listing = setup(harness, 3)
    # A run of the previous version stored and announced them; the line broke before QUIT.
    seen = {}
    for (uidl, size), body in zip(listing, bodies, strict=True):
        key = harness.key_for(uidl, MAILBOX)
        harness.aws.s3.put_object(Bucket=harness.aws.bucket, Key=key, Body=body)
        seen[uidl_digest(uidl)] = {"size": size, "sha256": sha256(body)}
    put_state(harness, {"version": 3, "seen": seen})

    summary = harness.run()

    assert summary["redeleted"] == 3  # proven by the digests version 3 remembered
    assert summary["stored"] == 0
    assert harness.aws.receive_all() == []  # no pointer sent twice
    assert harness.dovecot.message_count(harness.user) == 0
    assert json.loads(harness.aws.get_object(STATE_KEY))["version"] == 5
    assert set(stored_state(harness).deleted) == {uidl_digest(uidl) for uidl, _ in listing}


# -- (b) one run per mailbox ---------------------------------------------------------


def test_a_live_lease_of_another_run_makes_the_run_stand_aside(
    harness: Harness, output: CapturedOutput
) -> None:
    setup(harness, 3)
    held = {"version": 3, "lease_owner": "another-run", "lease_until": time.time() + 600}
    put_state(harness, held)
    before = harness.aws.s3.head_object(Bucket=harness.aws.bucket, Key=STATE_KEY)["ETag"]

    summary = harness.run()

    assert summary["stopped"] == "locked"
    assert harness.dovecot.message_count(harness.user) == 3  # not even logged in
    assert harness.mail_keys() == []
    assert harness.aws.receive_all() == []
    after = harness.aws.s3.head_object(Bucket=harness.aws.bucket, Key=STATE_KEY)["ETag"]
    assert after == before  # the state is not touched either
    assert metric_total(output, "MailboxLocked") == 1
    assert any("another run" in r.get("message", "") for r in output.records())


def test_an_expired_lease_is_taken_over_and_given_back(harness: Harness) -> None:
    setup(harness, 2)
    put_state(harness, {"version": 3, "lease_owner": "crashed-run", "lease_until": time.time() - 1})

    summary = harness.run()

    assert summary["stopped"] == "completed"
    assert summary["deleted"] == 2
    state = stored_state(harness)
    assert (state.lease_owner, state.lease_until) == (None, 0.0)


def test_a_second_run_while_the_first_is_working_stands_aside(
    harness: Harness, mid_run: Callable[[Callable[[], None]], None]
) -> None:
    bodies = [corpus.simple(i).expected for i in range(1, 6)]
    setup(harness, 5)
    second: list[Any] = []

    def overlapping_run() -> None:
        thread = threading.Thread(target=lambda: second.append(harness.run()))
        thread.start()
        thread.join(timeout=120)

    mid_run(overlapping_run)
    first = harness.run()

    assert [s["stopped"] for s in second] == ["locked"]
    assert first["stopped"] == "completed"
    assert first["deleted"] == 5
    # Each message stored and announced exactly once.
    assert sorted(harness.mail_objects().values()) == sorted(bodies)
    assert len(harness.aws.receive_all()) == 5


# -- (c) a writer that lost the race merges ------------------------------------------


def test_a_release_made_during_a_run_is_not_undone_by_its_save(
    harness: Harness,
    mid_run: Callable[[Callable[[], None]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pop3_ingest_cli.main import main

    listing = setup(harness, 3)
    # Quarantined before the run, so the run skips it and remembers it quarantined.
    released = uidl_digest(listing[0][0])
    # Version 2 on purpose: a state every version of the function reads the same.
    put_state(harness, {"version": 2, "quarantined": {released: FAILURE}})
    harness.aws.s3.put_object(
        Bucket=harness.aws.bucket,
        Key=f"mail/_quarantine/{MAILBOX}/{released}.json",
        Body=json.dumps({"mailbox": MAILBOX, "size": 1}).encode(),
    )
    argv = ["quarantine", "release", "--bucket", harness.aws.bucket, "--mailbox", MAILBOX]
    codes: list[int] = []
    mid_run(lambda: codes.append(main([*argv, "--digest", released])))

    summary = harness.run()

    assert codes == [0]
    assert summary["in_quarantine"] == 1
    assert summary["deleted"] == 2
    state = stored_state(harness)
    assert released not in state.quarantined  # the operator's release stands
    assert set(state.deleted) == {uidl_digest(uidl) for uidl, _ in listing[1:]}  # and the run's
    assert state.lease_owner is None
    capsys.readouterr()
    # So the next run tries the released message again.
    assert harness.run()["deleted"] == 1


def test_two_writers_changes_both_survive(
    harness: Harness, mid_run: Callable[[Callable[[], None]], None]
) -> None:
    listing = setup(harness, 2)
    theirs = "8" * 40

    def another_writer() -> None:
        # Whatever is stored now (the lease, in this version), plus a failure of theirs.
        try:
            document = json.loads(harness.aws.get_object(STATE_KEY))
        except harness.aws.s3.exceptions.NoSuchKey:
            document = {"version": 3}
        document.setdefault("failures", {})[theirs] = FAILURE
        put_state(harness, document)

    mid_run(another_writer)
    summary = harness.run()

    assert summary["deleted"] == 2
    state = stored_state(harness)
    assert theirs in state.failures
    assert set(state.deleted) == {uidl_digest(uidl) for uidl, _ in listing}


# -- the deadline bounds state writes ------------------------------------------------


def test_a_hanging_state_save_is_given_up_before_the_deadline(
    harness: Harness, output: CapturedOutput, mid_run: Callable[[Callable[[], None]], None]
) -> None:
    from tests.support.harness import EVENT
    from tests.support.lambda_context import FakeLambdaContext

    from pop3_ingest.handlers.fetch import aws_clients, lambda_handler

    setup(harness, 2)
    armed, answer = threading.Event(), threading.Event()

    def hang(request: Any, **_: Any) -> None:
        # After the run got going, the state save finds an S3 that never answers.
        if armed.is_set() and STATE_KEY in request.url:
            answer.wait(timeout=60)

    state_client = aws_clients().s3_state
    state_client.meta.events.register("before-send.s3.PutObject", hang)
    mid_run(armed.set)
    context = FakeLambdaContext(remaining_ms=6_000)
    try:
        summary = lambda_handler(dict(EVENT), context)
        left_ms = context.get_remaining_time_in_millis()
    finally:
        answer.set()
        state_client.meta.events.unregister("before-send.s3.PutObject", hang)

    assert left_ms > 0, "the handler returned after the Lambda deadline"
    assert summary["deleted"] == 2  # the mail is safe either way
    assert metric_total(output, "StateNotSaved") == 1
    assert any(r.get("message") == "run state not saved" for r in output.records())
