"""Mailbox runs, measured: the real fetch handler on jobs, as the SQS event source hands them.

:class:`JobPlayer` plays Lambda's SQS event source against the moto jobs queue:
it receives up to ``batch_size`` jobs, invokes the handler (in a
:class:`~benchmarks.fleet_runner.Runner`) with them as one event, and deletes
the ones that did not fail. Every AWS call in between is counted by the
endpoint, the poller's own ReceiveMessage and DeleteMessageBatch included:
SQS bills them too.

:func:`state_after_days` drives one mailbox through simulated days of mail
(the runner's clock moves ahead between runs) and reports the size of its run
state in S3 as it grows.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchmarks.fleet_aws import FleetAws
from benchmarks.fleet_runner import Runner

FETCH_HANDLER = "pop3_ingest.handlers.fetch:lambda_handler"
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:jobs.fifo"


def group_id(secret_name: str) -> str:
    """A mailbox's message group: the digest of its secret's name (one group per mailbox)."""
    return hashlib.sha256(secret_name.encode()).hexdigest()


def iso(timestamp: float) -> str:
    """EventBridge Scheduler's ``scheduled-time``: ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_body(secret_name: str, scheduled_at: float | None) -> str:
    """What a tick of the mailbox's schedule puts on the jobs queue."""
    body: dict[str, Any] = {"secret_id": secret_name}
    if scheduled_at is not None:
        body["scheduled_at"] = iso(scheduled_at)
    return json.dumps(body)


def sqs_record(message_id: str, body: str, group: str, receipt: str = "r") -> dict[str, Any]:
    """One record of the SQS event Lambda hands the function."""
    return {
        "messageId": message_id,
        "receiptHandle": receipt,
        "body": body,
        "attributes": {
            "MessageGroupId": group,
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(int(time.time() * 1000)),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": _QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


# -- one scenario -----------------------------------------------------------------------


@dataclass
class Scenario:
    """What one kind of run cost, summed over its jobs."""

    name: str
    batch_size: int
    memory_mb: int
    jobs: int = 0
    invocations: int = 0
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    moto_bound: Counter[str] = field(default_factory=Counter)
    log_bytes: int = 0
    log_lines: int = 0
    emf_bytes: int = 0
    metrics: set[str] = field(default_factory=set)
    log_messages: Counter[str] = field(default_factory=Counter)
    failed_jobs: int = 0
    errors: list[str] = field(default_factory=list)
    messages_delivered: int = 0
    messages_left: int = 0

    def add(self, answer: dict[str, Any], jobs: int) -> None:
        self.jobs += jobs
        self.invocations += 1
        self.wall_s.append(float(answer["wall_s"]))
        self.cpu_s.append(float(answer["cpu_s"]))
        printed = answer["printed"]
        self.log_bytes += int(printed["log_bytes"])
        self.log_lines += int(printed["log_lines"])
        self.emf_bytes += int(printed["emf_bytes"])
        self.metrics.update(printed["metrics"])
        self.log_messages.update(printed.get("log_messages", {}))
        if answer.get("error"):
            self.errors.append(str(answer["error"]))

    def summary(self) -> dict[str, Any]:
        jobs = max(self.jobs, 1)
        gb_s = sum(self.wall_s) * self.memory_mb / 1024
        return {
            "batch_size": self.batch_size,
            "memory_mb": self.memory_mb,
            "jobs": self.jobs,
            "invocations": self.invocations,
            "jobs_per_invocation": self.jobs / max(self.invocations, 1),
            "wall_s_per_invocation": sum(self.wall_s) / max(self.invocations, 1),
            "cpu_s_per_invocation": sum(self.cpu_s) / max(self.invocations, 1),
            "gb_s_per_job": gb_s / jobs,
            "calls": dict(sorted(self.calls.items())),
            "calls_per_job": {k: v / jobs for k, v in sorted(self.calls.items())},
            "moto_bound": dict(self.moto_bound),
            "log_bytes_per_job": self.log_bytes / jobs,
            "log_lines_per_job": self.log_lines / jobs,
            "emf_bytes_per_job": self.emf_bytes / jobs,
            "metrics": sorted(self.metrics),
            "log_messages": dict(self.log_messages.most_common(20)),
            "failed_jobs": self.failed_jobs,
            "errors": self.errors[:5],
            "messages_delivered": self.messages_delivered,
            "messages_left": self.messages_left,
        }


class JobPlayer:
    """Jobs onto the moto FIFO queue, then Lambda's SQS event source, played out."""

    def __init__(self, aws: FleetAws, runner: Runner, jobs_url: str) -> None:
        self.aws = aws
        self.runner = runner
        self.jobs_url = jobs_url
        self.sqs = aws.client("sqs")

    def enqueue(self, jobs: Iterable[tuple[str, float | None]]) -> int:
        """Send one job per (secret name, scheduled time), as the schedules' ticks would."""
        sent = 0
        for name, scheduled_at in jobs:
            self.sqs.send_message(
                QueueUrl=self.jobs_url,
                MessageBody=job_body(name, scheduled_at),
                MessageGroupId=group_id(name),
            )
            sent += 1
        return sent

    def play(self, scenario: Scenario, *, timeout_ms: int) -> int:
        """Receive, invoke, delete, until the queue has nothing visible; returns the
        receives that found nothing (the end of the play, not a cost per job: Lambda's
        pollers' empty receives are a fixed cost of the queue, priced apart)."""
        while True:
            received = self.sqs.receive_message(
                QueueUrl=self.jobs_url,
                MaxNumberOfMessages=scenario.batch_size,
                AttributeNames=["All"],
                VisibilityTimeout=900,
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not received:
                return 1
            records = [
                sqs_record(
                    m["MessageId"], m["Body"], m["Attributes"]["MessageGroupId"], m["ReceiptHandle"]
                )
                for m in received
            ]
            answer = self.runner.invoke(FETCH_HANDLER, {"Records": records}, timeout_ms=timeout_ms)
            scenario.add(answer, len(records))
            failed = _failed_ids(answer)
            scenario.failed_jobs += len(failed)
            done = [m for m in received if m["MessageId"] not in failed]
            if done:
                self.sqs.delete_message_batch(
                    QueueUrl=self.jobs_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(done)
                    ],
                )


def _failed_ids(answer: dict[str, Any]) -> set[str]:
    result = answer.get("result")
    if not isinstance(result, dict):
        return set()
    return {str(f.get("itemIdentifier")) for f in result.get("batchItemFailures", [])}


def measure(
    player: JobPlayer,
    scenario: Scenario,
    jobs: list[tuple[str, float | None]],
    *,
    timeout_ms: int,
) -> Scenario:
    """Enqueue ``jobs`` (not counted: the schedules' sends belong to the round), then
    play them and count every call until the last job is done."""
    player.enqueue(jobs)
    player.aws.reset_counts()
    empty = player.play(scenario, timeout_ms=timeout_ms)
    scenario.calls.update(player.aws.calls())
    scenario.calls["sqs:ReceiveMessage"] -= empty
    scenario.calls += Counter()  # drops what is left at zero
    scenario.moto_bound.update(player.aws.moto_bound())
    return scenario


# -- state after simulated days ----------------------------------------------------------


@dataclass(frozen=True)
class StatePlan:
    days: int = 30
    messages_per_day: int = 100
    poll_minutes: int = 360
    message_bytes: int = 2000


def arrivals(plan: StatePlan) -> list[int]:
    """Messages arriving before each run: ``messages_per_day`` spread evenly."""
    runs = plan.days * 24 * 60 // plan.poll_minutes
    per_run = plan.messages_per_day * plan.poll_minutes / (24 * 60)
    return [int((k + 1) * per_run) - int(k * per_run) for k in range(runs)]


def state_after_days(
    aws: FleetAws,
    runner: Runner,
    *,
    plan: StatePlan,
    secret_name: str,
    deliver: Callable[[int], None],
    state_size: Callable[[], int],
) -> dict[str, Any]:
    """Run one mailbox every ``poll_minutes`` of simulated time with mail arriving;
    the state's size at the end of each day, and the calls the runs made."""
    aws.reset_counts()
    by_day: list[int] = []
    runs_per_day = 24 * 60 // plan.poll_minutes
    errors: list[str] = []
    stored = 0
    for k, count in enumerate(arrivals(plan)):
        runner.advance(plan.poll_minutes * 60)
        deliver(count)
        now = runner.now()
        record = sqs_record(f"state-{k}", job_body(secret_name, now), group_id(secret_name))
        answer = runner.invoke(FETCH_HANDLER, {"Records": [record]}, timeout_ms=120_000)
        if answer.get("error") or _failed_ids(answer):
            errors.append(str(answer.get("error") or answer.get("result")))
        stored += count
        if (k + 1) % runs_per_day == 0:
            by_day.append(state_size())
    calls = aws.calls()
    return {
        "days": plan.days,
        "messages_per_day": plan.messages_per_day,
        "poll_minutes": plan.poll_minutes,
        "runs": len(arrivals(plan)),
        "messages": stored,
        "bytes_final": by_day[-1] if by_day else 0,
        "bytes_max": max(by_day, default=0),
        "bytes_by_day": by_day,
        "calls": calls,
        # Every stored message is one PutObject (all are far below the multipart size).
        "state_puts": calls.get("s3:PutObject", 0) - stored,
        "errors": errors[:5],
        "error_count": len(errors),
    }
