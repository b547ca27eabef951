"""Many mailboxes on one deployment: reconciler → schedules → FIFO jobs → fetch function.

moto keeps EventBridge Scheduler's schedules but never fires them, so the tests
play each tick: they send the job the Scheduler would send, as the schedule says.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.support import corpus
from tests.support.dovecot import DovecotServer
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources

pytestmark = pytest.mark.integration

USERS = 50
GROUP = "pop3-ingest-mailboxes"
SCHEDULER_ROLE_ARN = "arn:aws:iam::123456789012:role/pop3-ingest-scheduler"


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """What the Lambda SQS event source hands the function for received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "MessageGroupId": m.get("Attributes", {}).get("MessageGroupId", "g"),
                    "ApproximateReceiveCount": "1",
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


@pytest.fixture
def fleet(
    dovecot: DovecotServer, aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    jobs_url = aws.moto.create_queue(
        "jobs.fifo", FifoQueue="true", ContentBasedDeduplication="true"
    )
    jobs_arn = aws.sqs.get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    expected: dict[str, list[bytes]] = {}
    for n in range(USERS):
        user = f"user{n:02d}"
        dovecot.add_user(user, f"pw-{n}-secret")
        messages = [corpus.simple(n * 10 + i) for i in range(1 + n % 3)]
        for message in messages:
            dovecot.deliver(user, message.raw_for_maildir)
        expected[user] = [m.expected for m in messages]
        aws.secretsmanager.create_secret(
            Name=f"pop3/{user}",
            SecretString=json.dumps(dovecot.secret(user, mailbox=user)),
            Tags=[{"Key": "pop3-ingest", "Value": "enabled"}],
        )
    # Not enabled: must be left alone.
    dovecot.add_user("paused", "pw-paused")
    dovecot.deliver("paused", corpus.simple(999).raw_for_maildir)
    aws.secretsmanager.create_secret(
        Name="pop3/paused",
        SecretString=json.dumps(dovecot.secret("paused", mailbox="paused")),
        Tags=[{"Key": "pop3-ingest", "Value": "disabled"}],
    )
    aws.moto.client("scheduler").create_schedule_group(Name=GROUP)
    monkeypatch.setenv("SCHEDULE_GROUP", GROUP)
    monkeypatch.setenv("JOBS_QUEUE_ARN", jobs_arn)
    monkeypatch.setenv("SCHEDULER_ROLE_ARN", SCHEDULER_ROLE_ARN)
    monkeypatch.setenv("BUCKET_NAME", aws.bucket)
    monkeypatch.setenv("QUEUE_URL", aws.queue_url)
    monkeypatch.setenv("ALLOW_PRIVATE_HOSTS", "true")  # Dovecot listens on 127.0.0.1
    monkeypatch.delenv("SECRET_ID", raising=False)
    return {"jobs_url": jobs_url, "jobs_arn": jobs_arn, "expected": expected}


def reconcile() -> dict[str, Any]:
    """A deploy's full reconcile (events/stack-deployed.json)."""
    from pop3_ingest.handlers.reconcile import lambda_handler

    event = {"detail-type": "CloudFormation Stack Status Change", "source": "aws.cloudformation"}
    result: dict[str, Any] = lambda_handler(event, FakeLambdaContext(remaining_ms=900_000))
    return result


def tick_time() -> str:
    """A tick's time as the Scheduler writes it into the job."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def play_ticks(aws: AwsResources, fleet: dict[str, Any], at: str | None = None) -> int:
    """Send what every schedule of the group sends at one tick (``at``, default now);
    returns how many."""
    scheduler = aws.moto.client("scheduler")
    now = at or tick_time()
    sent = 0
    for page in scheduler.get_paginator("list_schedules").paginate(GroupName=GROUP):
        for summary in page["Schedules"]:
            target = scheduler.get_schedule(Name=summary["Name"], GroupName=GROUP)["Target"]
            assert target["Arn"] == fleet["jobs_arn"]
            queue_url = fleet["jobs_url"]
            aws.sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=target["Input"].replace("<aws.scheduler.scheduled-time>", now),
                MessageGroupId=target["SqsParameters"]["MessageGroupId"],
            )
            sent += 1
    return sent


def drain_jobs(aws: AwsResources, fleet: dict[str, Any]) -> list[dict[str, Any]]:
    """Play the SQS event source: up to ten records per invocation, delete on success."""
    from pop3_ingest.handlers.fetch import lambda_handler

    results = []
    for _ in range(USERS * 3):
        received = aws.sqs.receive_message(
            QueueUrl=fleet["jobs_url"],
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            VisibilityTimeout=60,
        ).get("Messages", [])
        if not received:
            break
        response = lambda_handler(
            sqs_event(received, fleet["jobs_arn"]), FakeLambdaContext(remaining_ms=120_000)
        )
        results.append(response)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for message in received:
            if message["MessageId"] not in failed:
                aws.sqs.delete_message(
                    QueueUrl=fleet["jobs_url"], ReceiptHandle=message["ReceiptHandle"]
                )
    return results


def test_fifty_mailboxes_fetched_through_their_schedules_and_jobs(
    dovecot: DovecotServer, aws: AwsResources, fleet: dict[str, Any]
) -> None:
    result = reconcile()
    assert (result["mailboxes"], result["created"], result["failed"]) == (USERS, USERS, 0)
    assert play_ticks(aws, fleet) == USERS

    results = drain_jobs(aws, fleet)
    assert all(r == {"batchItemFailures": []} for r in results)

    for user, bodies in fleet["expected"].items():
        assert dovecot.message_count(user) == 0, user
        stored = aws.objects(f"mail/{user}/")
        assert sorted(stored.values()) == sorted(bodies), user
    assert dovecot.message_count("paused") == 1
    pointers = aws.receive_all()
    total = sum(len(b) for b in fleet["expected"].values())
    assert len(pointers) == total
    assert len({p["key"] for p in pointers}) == total  # nothing duplicated


def test_a_tick_sent_twice_is_one_job(aws: AwsResources, fleet: dict[str, Any]) -> None:
    reconcile()
    # The Scheduler retries a send it is unsure of: the body (with the tick's
    # time) is the same, so content-based deduplication keeps one.
    at = tick_time()
    play_ticks(aws, fleet, at)
    play_ticks(aws, fleet, at)
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=fleet["jobs_url"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) == USERS


def test_malformed_job_is_reported_as_a_batch_item_failure(
    dovecot: DovecotServer, aws: AwsResources, fleet: dict[str, Any]
) -> None:
    from pop3_ingest.handlers.fetch import lambda_handler

    good = {
        "MessageId": "good",
        "ReceiptHandle": "r1",
        "Body": json.dumps({"secret_id": "pop3/user01"}),
    }
    bad = {"MessageId": "bad", "ReceiptHandle": "r2", "Body": "not json"}
    response = lambda_handler(
        sqs_event([good, bad], fleet["jobs_arn"]), FakeLambdaContext(remaining_ms=60_000)
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert dovecot.message_count("user01") == 0


def test_a_mailbox_with_a_wrong_password_does_not_fail_the_job(
    dovecot: DovecotServer, aws: AwsResources, fleet: dict[str, Any]
) -> None:
    from pop3_ingest.handlers.fetch import lambda_handler

    aws.secretsmanager.put_secret_value(
        SecretId="pop3/user02",
        SecretString=json.dumps(dovecot.secret("user02", password="wrong", mailbox="user02")),
    )
    job = {"MessageId": "j", "ReceiptHandle": "r", "Body": json.dumps({"secret_id": "pop3/user02"})}
    response = lambda_handler(sqs_event([job], fleet["jobs_arn"]), FakeLambdaContext())
    # Recorded in the mailbox's state and metrics; redelivery would only
    # hammer the account, so the job itself succeeds.
    assert response == {"batchItemFailures": []}
    assert dovecot.message_count("user02") == 3
