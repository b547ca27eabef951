"""Issue 8, hole 6: the run never overruns the Lambda deadline, whatever S3 and SQS do.

Through the real handler (fake POP3 server, moto over HTTP). AWS calls are held
for longer than the Lambda has left; a run that waits for them returns after its
deadline. The rule: every wait is bounded by the run's cut-off, the handler
returns before the deadline with its state saved, and work cut short is
abandoned (multipart uploads aborted), never half-committed.
"""

from __future__ import annotations

import pytest
from tests.support.aws_hooks import HOLD_SECONDS, MARGIN, SlowAws
from tests.support.corpus import big_message
from tests.support.fake_pop3 import FakeMessage, Fault
from tests.support.harness import DeadlineContext, HostileHarness, invoke, messages, state_saved

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# What the Lambda has left when it is invoked: the margin and a little more,
# well short of HOLD_SECONDS.
REMAINING_MS = int((MARGIN + 2) * 1000)
assert REMAINING_MS / 1000 < HOLD_SECONDS


def short_lambda() -> DeadlineContext:
    return DeadlineContext(remaining_ms=REMAINING_MS)


def test_uploads_hanging_after_a_lost_connection_do_not_hold_the_run(
    hostile: HostileHarness, slow_aws: SlowAws
) -> None:
    # GIVEN uploads that hang, and a line that drops in the middle of the fourth message
    hostile.serve(messages(6), faults=[Fault("RETR-body", "reset", nth=4)])
    slow_aws.hold_from("s3", "PutObject", 1)

    # WHEN the run loses the connection with uploads in flight
    run = invoke(hostile, slow_aws, short_lambda())

    # THEN it returns before the deadline, its state saved
    hostile.check(run.outcome)
    assert slow_aws.calls["s3.PutObject"] > 0
    assert run.remaining_ms > 0, "returned after the Lambda deadline"
    assert state_saved(hostile)


def test_announces_hanging_after_a_lost_connection_do_not_hold_the_run(
    hostile: HostileHarness, slow_aws: SlowAws
) -> None:
    # GIVEN SQS that lets its first batch through only once a second batch is
    # on its way, then hangs; and a line that drops at the first DELE (which
    # follows the first batch)
    hostile.serve(messages(20), faults=[Fault("DELE", "reset")])
    second = slow_aws.started("sqs", "SendMessageBatch", 2)
    slow_aws.when("sqs", "SendMessageBatch", lambda c: c.n == 1, lambda c: slow_aws.hold(second))
    slow_aws.hold_from("sqs", "SendMessageBatch", 2)

    # WHEN the run loses the connection with a batch of pointers in flight
    run = invoke(hostile, slow_aws, short_lambda())

    # THEN it returns before the deadline, its state saved
    hostile.check(run.outcome)
    assert slow_aws.calls["sqs.SendMessageBatch"] > 0
    assert run.remaining_ms > 0, "returned after the Lambda deadline"
    assert state_saved(hostile)


def test_a_hanging_streamed_upload_does_not_hold_the_run(
    hostile: HostileHarness, slow_aws: SlowAws
) -> None:
    # GIVEN a message big enough to be streamed in parts, whose parts hang;
    # the deadline comes close once the first part is on its way (with the
    # deadline close from the start, the run rightly would not take it)
    big = FakeMessage(big_message(1, 9 * MIB), b"big")
    fake = hostile.serve([big, *messages(2, start=2)])
    context = DeadlineContext(remaining_ms=60_000)
    slow_aws.hold_from("s3", "UploadPart", 1, first=lambda: context.expire_in(REMAINING_MS / 1000))

    # WHEN the run streams it
    run = invoke(hostile, slow_aws, context)

    # THEN it returns before the deadline, its state saved, the upload abandoned
    hostile.check(run.outcome)
    assert slow_aws.calls["s3.UploadPart"] > 0
    assert run.remaining_ms > 0, "returned after the Lambda deadline"
    assert state_saved(hostile)
    aws = hostile.aws
    assert aws.s3.list_multipart_uploads(Bucket=aws.bucket).get("Uploads", []) == []
    assert big in fake.messages
