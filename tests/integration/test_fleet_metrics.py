"""Mode fleet's metrics and "run finished" lines, through the real handler.

The handler runs a batch of jobs (the SQS event Lambda hands it) against Dovecot
and moto; what it printed is parsed: the EMF blobs CloudWatch turns into
metrics, and the JSON log lines the saved queries and the Contributor Insights
rule read. A custom metric is a namespace, a name and a set of dimension values.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from tests.support import corpus
from tests.support.dovecot import DovecotServer
from tests.support.harness import EVENT, CapturedOutput
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources

pytestmark = pytest.mark.integration

Metric = tuple[str, str, tuple[tuple[str, str], ...]]


@pytest.fixture
def fleet_env(aws: AwsResources, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws.function_env("unused").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SECRET_ID")
    monkeypatch.setenv("MODE", "fleet")


def add_mailbox(
    dovecot: DovecotServer, aws: AwsResources, user: str, mails: int = 1, **overrides: Any
) -> str:
    """A Dovecot mailbox with mail, and its secret; returns the secret's name."""
    dovecot.add_user(user, f"pw-{user}-secret")
    for n in range(mails):
        dovecot.deliver(user, corpus.simple(n).raw_for_maildir)
    secret = dovecot.secret(user, mailbox=user) | overrides
    return aws.put_secret(f"pop3/{user}", secret)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def jobs_event(secret_ids: Iterable[str]) -> dict[str, Any]:
    """What the SQS event source hands the function: one job per mailbox, each its group."""
    records = []
    for n, secret_id in enumerate(secret_ids):
        body = json.dumps({"secret_id": secret_id})
        records.append(
            {
                "messageId": f"job-{n}",
                "receiptHandle": f"receipt-{n}",
                "body": body,
                "attributes": {"MessageGroupId": secret_id, "ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs.fifo",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


def run_jobs(secret_ids: Iterable[str]) -> dict[str, Any]:
    from pop3_ingest.handlers.fetch import lambda_handler

    response: dict[str, Any] = lambda_handler(
        jobs_event(secret_ids), FakeLambdaContext(remaining_ms=120_000)
    )
    return response


def emf_blobs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if "_aws" in record]


def custom_metrics(blobs: list[dict[str, Any]]) -> set[Metric]:
    """Every (namespace, name, dimension values) the blobs publish: each a billed metric."""
    found = set()
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = tuple(sorted((name, blob[name]) for name in dimension_set))
                for metric in directive["Metrics"]:
                    found.add((directive["Namespace"], metric["Name"], dimensions))
    return found


def totals(blobs: list[dict[str, Any]]) -> Counter[str]:
    """Each metric's values summed over the blobs, as CloudWatch's Sum would."""
    summed: Counter[str] = Counter()
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                summed[metric["Name"]] += sum(value) if isinstance(value, list) else value
    return summed


def runs_finished(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if record.get("message") == "run finished"]


@pytest.mark.usefixtures("fleet_env")
def test_in_fleet_mode_no_metric_carries_a_mailbox(
    dovecot: DovecotServer, aws: AwsResources, output: CapturedOutput
) -> None:
    # GIVEN mailboxes that end every way a fleet sees most: mail taken, a wrong
    # password, a server that is not there, a secret that is not usable
    good = [add_mailbox(dovecot, aws, f"good{n}", mails=2) for n in range(2)]
    wrong_password = add_mailbox(dovecot, aws, "wrongpw", password="not-the-password")
    unreachable = add_mailbox(dovecot, aws, "gone", port=closed_port(), tls="none")
    unusable = aws.put_secret("pop3/unusable", {"host": "pop.example.com"})
    # WHEN one batch of jobs runs them
    response = run_jobs([*good, wrong_password, unreachable, unusable])
    # THEN a mailbox's own trouble fails no job
    assert response == {"batchItemFailures": []}
    records = output.records()
    blobs = emf_blobs(records)
    assert blobs
    # AND no metric has a mailbox dimension, or any dimension but the service
    for namespace, name, dimensions in custom_metrics(blobs):
        assert dimensions == (("service", "pop3-ingest"),), (namespace, name)
    # AND the fleet-level counts say how the runs ended
    summed = totals(blobs)
    assert summed["RunsCompleted"] == 2
    assert summed["RunsLoginFailed"] == 1
    assert summed["RunsUnreachable"] == 1
    assert summed["RunsMisconfigured"] == 1
    assert summed["MessagesStored"] == 4
    # AND each run has one "run finished" line naming its mailbox and how it went
    finished = {line["secret_id"]: line for line in runs_finished(records)}
    assert len(runs_finished(records)) == len(finished) == 5
    assert {(line["mailbox"], line["outcome"], line["health"]) for line in finished.values()} == {
        ("good0", "completed", "ok"),
        ("good1", "completed", "ok"),
        ("wrongpw", "login_failed", "failing"),
        ("gone", "unreachable", "failing"),
        # The secret names no mailbox: its id stands in for it.
        (unusable, "misconfigured", "failing"),
    }
    assert finished[good[0]]["summary"]["stored"] == 2
    assert "pw-wrongpw-secret" not in output.text()


@pytest.mark.usefixtures("fleet_env")
def test_a_fleet_makes_the_same_metrics_whatever_its_size(
    dovecot: DovecotServer, aws: AwsResources, output: CapturedOutput
) -> None:
    # GIVEN a fleet of 2 mailboxes, then one of 6, with the same kinds of endings
    small = [add_mailbox(dovecot, aws, f"small{n}") for n in range(2)]
    # (every user added before the first login: Dovecot re-reads its users once a second)
    large = [add_mailbox(dovecot, aws, f"large{n}") for n in range(6)]
    run_jobs(small)
    of_two = custom_metrics(emf_blobs(output.records()))
    # WHEN the larger fleet runs
    run_jobs(large)
    of_eight = custom_metrics(emf_blobs(output.records()))
    # THEN it creates no metric the smaller one did not
    assert of_two
    assert of_eight == of_two


def test_in_single_mode_each_mailbox_keeps_its_own_metrics(
    dovecot: DovecotServer,
    aws: AwsResources,
    output: CapturedOutput,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pop3_ingest.handlers.fetch import lambda_handler

    # GIVEN Mode single, scheduled runs of two mailboxes
    secret_ids = [add_mailbox(dovecot, aws, f"solo{n}") for n in range(2)]
    for name, value in aws.function_env(secret_ids[0]).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODE", "single")
    # WHEN each runs
    for secret_id in secret_ids:
        lambda_handler(EVENT | {"secret_id": secret_id}, FakeLambdaContext(remaining_ms=120_000))
    # THEN their metrics carry the mailbox dimension, one set per mailbox
    records = output.records()
    completed = {
        dict(dimensions).get("mailbox")
        for _, name, dimensions in custom_metrics(emf_blobs(records))
        if name == "RunsCompleted"
    }
    assert completed == {"solo0", "solo1"}
    assert [line["outcome"] for line in runs_finished(records)] == ["completed", "completed"]
