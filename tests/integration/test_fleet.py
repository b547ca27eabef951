"""Many mailboxes on one deployment: dispatcher → FIFO jobs → fetch function."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from tests.support import corpus
from tests.support.dovecot import DovecotServer
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources

pytestmark = pytest.mark.integration

USERS = 50


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
    jobs_url = aws.moto.create_queue("jobs.fifo", FifoQueue="true")
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
    monkeypatch.setenv("JOBS_QUEUE_URL", jobs_url)
    monkeypatch.setenv("BUCKET_NAME", aws.bucket)
    monkeypatch.setenv("QUEUE_URL", aws.queue_url)
    monkeypatch.delenv("SECRET_ID", raising=False)
    return {"jobs_url": jobs_url, "jobs_arn": jobs_arn, "expected": expected}


def drain_jobs(aws: AwsResources, fleet: dict[str, Any]) -> list[dict[str, Any]]:
    """Play the SQS event source: one record per invocation, delete on success."""
    from pop3_ingest.handlers.fetch import lambda_handler

    results = []
    for _ in range(USERS * 3):
        received = aws.sqs.receive_message(
            QueueUrl=fleet["jobs_url"],
            MaxNumberOfMessages=1,
            AttributeNames=["All"],
            VisibilityTimeout=60,
        ).get("Messages", [])
        if not received:
            break
        response = lambda_handler(
            sqs_event(received, fleet["jobs_arn"]), FakeLambdaContext(remaining_ms=120_000)
        )
        results.append(response)
        if not response["batchItemFailures"]:
            aws.sqs.delete_message(
                QueueUrl=fleet["jobs_url"], ReceiptHandle=received[0]["ReceiptHandle"]
            )
    return results


def test_fifty_mailboxes_fetched_through_dispatcher_and_jobs(
    dovecot: DovecotServer, aws: AwsResources, fleet: dict[str, Any]
) -> None:
    from pop3_ingest.handlers.dispatch import lambda_handler as dispatch

    result = dispatch({}, FakeLambdaContext())
    assert result == {"mailboxes": USERS, "enqueued": USERS, "failed": []}

    results = drain_jobs(aws, fleet)
    assert len(results) == USERS
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


def test_a_second_dispatch_in_the_same_window_adds_no_jobs(
    aws: AwsResources, fleet: dict[str, Any]
) -> None:
    from pop3_ingest.handlers.dispatch import lambda_handler as dispatch

    dispatch({}, FakeLambdaContext())
    dispatch({}, FakeLambdaContext())  # deduplicated by SQS FIFO
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
