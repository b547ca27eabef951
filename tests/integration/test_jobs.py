"""Mode fleet: a batch of jobs through the real handler, against Dovecot and moto.

An SQS batch holds up to 10 jobs, each its own message group (a mailbox). The
handler runs them side by side, reports failures per job, never runs two jobs
of one mailbox at once, drops stale jobs before logging in, and reads the
batch's secrets in one call.

Every mailbox here is reached through a :class:`MeetingProxy` in front of
Dovecot: it counts the sessions opened, and can hold the first ones until all
of them are open at once, which only runs that overlap can do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from tests.support import corpus
from tests.support.aws_hooks import error_response, handler_clients
from tests.support.dovecot import DovecotServer
from tests.support.harness import CapturedOutput
from tests.support.lambda_context import FakeLambdaContext
from tests.support.moto_server import AwsResources
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

JOBS_ARN = "arn:aws:sqs:us-east-1:123456789012:jobs.fifo"
# How long the first sessions wait for the others before going on alone. Runs
# that overlap all arrive within a second; runs one after the other never do.
MEETING_BOUND_S = 8.0
HOUR = 3600.0


class MeetingProxy(TcpProxy):
    """A TCP proxy to Dovecot that counts sessions; with ``meet``, the first
    ``meet`` sessions are held until all of them are open (or the bound passes)."""

    def __init__(self, target_port: int, meet: int = 0) -> None:
        super().__init__(target_port)
        self.meet = meet
        self.barrier = threading.Barrier(meet, timeout=MEETING_BOUND_S) if meet else None
        self.met = threading.Event()

    def accepted(self, conn: socket.socket, index: int) -> None:
        if self.barrier is None or index >= self.meet:
            super().accepted(conn, index)
            return
        self.spawn(self._meet_then_forward, conn, index, name=f"meeting-{index}")

    def _meet_then_forward(self, conn: socket.socket, index: int) -> None:
        assert self.barrier is not None
        try:
            self.barrier.wait()
            self.met.set()
        except threading.BrokenBarrierError:
            pass  # the runs did not overlap: go on, the test says so
        super().accepted(conn, index)


@dataclass
class Fleet:
    """Mailboxes on one Dovecot, their secrets, and the function's environment."""

    dovecot: DovecotServer
    aws: AwsResources
    proxy: MeetingProxy | None = None
    expected: dict[str, list[bytes]] = field(default_factory=dict)

    def mailbox(self, user: str, messages: int = 2, password: str | None = None) -> str:
        """A Dovecot user with mail, and its secret (through the proxy); returns the secret id."""
        self.dovecot.add_user(user, f"pw-{user}-secret")
        mail = [corpus.simple(len(self.expected) * 10 + i) for i in range(messages)]
        for message in mail:
            self.dovecot.deliver(user, message.raw_for_maildir)
        self.expected[user] = [m.expected for m in mail]
        secret = self.dovecot.secret(user, mailbox=user)
        if self.proxy is not None:
            secret["port"] = self.proxy.port
        if password is not None:
            secret["password"] = password
        return self.aws.put_secret(f"pop3/{user}", secret)

    def stored(self, user: str) -> list[bytes]:
        return sorted(self.aws.objects(f"mail/{user}/").values())

    def drained(self, user: str) -> bool:
        """All of the user's mail stored, and nothing left on the server."""
        return self.dovecot.message_count(user) == 0 and self.stored(user) == sorted(
            self.expected[user]
        )


@pytest.fixture
def fleet(
    dovecot: DovecotServer, aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Fleet]:
    for name, value in aws.function_env("unused").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SECRET_ID")
    monkeypatch.setenv("MODE", "fleet")
    monkeypatch.setenv("DEADLINE_MARGIN_SECONDS", "2")
    fleet = Fleet(dovecot, aws)
    yield fleet
    if fleet.proxy is not None:
        fleet.proxy.close()


def through_proxy(fleet: Fleet, meet: int = 0) -> MeetingProxy:
    fleet.proxy = MeetingProxy(fleet.dovecot.pop3s_port, meet).start()
    return fleet.proxy


def tick(seconds_ago: float = 0.0) -> str:
    """A schedule's tick time, as EventBridge Scheduler writes it."""
    at = datetime.fromtimestamp(time.time() - seconds_ago, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(secret_id: str, scheduled_at: str | None = None, group: str | None = None) -> Any:
    """One record as the SQS event source hands it over (``group``: the message group)."""
    body = json.dumps(
        {"secret_id": secret_id} | ({"scheduled_at": scheduled_at} if scheduled_at else {})
    )
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": body,
        "attributes": {"MessageGroupId": group or secret_id, "ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": JOBS_ARN,
        "awsRegion": "us-east-1",
    }


def run_batch(*records: Any) -> list[str]:
    """Invoke the handler with one batch; the message ids it reports failed."""
    from pop3_ingest.handlers.fetch import lambda_handler

    response = lambda_handler({"Records": list(records)}, FakeLambdaContext(remaining_ms=120_000))
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def run_lines(output: CapturedOutput) -> list[dict[str, Any]]:
    return [r for r in output.records() if r.get("message") == "run finished"]


def metric_total(output: CapturedOutput, name: str) -> float:
    total = 0.0
    for record in output.records():
        if name in record and "_aws" in record:
            value = record[name]
            total += sum(value) if isinstance(value, list) else value
    return total


# -- side by side ------------------------------------------------------------------


def test_a_batch_runs_its_mailboxes_side_by_side_and_drains_them_all(
    fleet: Fleet, output: CapturedOutput
) -> None:
    users = [f"user{n}" for n in range(4)]
    proxy = through_proxy(fleet, meet=len(users))
    jobs = [job(fleet.mailbox(user), tick()) for user in users]
    assert run_batch(*jobs) == []
    # Every session was open at the same moment: their waits overlapped.
    assert proxy.met.is_set()
    assert all(fleet.drained(user) for user in users)
    pointers = fleet.aws.receive_all()
    assert len(pointers) == sum(len(mail) for mail in fleet.expected.values())
    # One "run finished" line per mailbox, each naming its own.
    lines = run_lines(output)
    assert sorted(line["mailbox"] for line in lines) == users
    assert {line["outcome"] for line in lines} == {"completed"}


def test_each_run_s_log_lines_name_its_own_mailbox(fleet: Fleet, output: CapturedOutput) -> None:
    # Every login is refused, and each run logs it while the others are running.
    users = ["alpha", "bravo", "charlie"]
    proxy = through_proxy(fleet, meet=len(users))
    jobs = [job(fleet.mailbox(user, password="wrong"), tick()) for user in users]
    assert run_batch(*jobs) == []
    assert proxy.met.is_set()
    refused = [r for r in output.records() if r.get("message") == "login failed"]
    assert sorted(r.get("mailbox") for r in refused) == users


def test_one_failing_mailbox_fails_only_its_own_jobs(fleet: Fleet, output: CapturedOutput) -> None:
    through_proxy(fleet)
    good, broken = fleet.mailbox("good"), fleet.mailbox("broken")
    refused = fleet.mailbox("refused", password="wrong")
    # The broken mailbox's state cannot be read: an AWS failure, not the mailbox's.
    with failing_state_reads("broken"):
        first, second = job(broken, tick(60)), job(broken, tick())
        failed = run_batch(job(good, tick()), first, second, job(refused, tick()))
    # The broken job, and the later job of its mailbox (kept in order), go back to SQS.
    assert failed == [first["messageId"], second["messageId"]]
    assert fleet.drained("good")
    assert fleet.dovecot.message_count("broken") == 2
    # A refused login is the mailbox's own failure: recorded, and its job is done.
    assert fleet.dovecot.message_count("refused") == 2
    outcomes = {line["mailbox"]: line["outcome"] for line in run_lines(output)}
    assert outcomes == {"good": "completed", "broken": "error", "refused": "login_failed"}


@contextlib.contextmanager
def failing_state_reads(mailbox: str) -> Iterator[None]:
    """The handler's state reads of one mailbox answer with an S3 error."""
    key = f"_state/{mailbox}.json"
    client = handler_clients().s3_state

    def refuse(request: Any, **_: Any) -> Any:
        if key in request.url:
            return error_response(request.url, "s3", 500, "InternalError", "injected")
        return None

    client.meta.events.register("before-send.s3.GetObject", refuse)
    try:
        yield
    finally:
        client.meta.events.unregister("before-send.s3.GetObject", refuse)


def test_a_malformed_job_fails_alone(fleet: Fleet) -> None:
    through_proxy(fleet)
    good = job(fleet.mailbox("good"), tick())
    not_json = job("x") | {"body": "not json"}
    no_secret = job("x") | {"body": json.dumps({"scheduled_at": tick()})}
    bad_time = job("x") | {"body": json.dumps({"secret_id": "x", "scheduled_at": "soon"})}
    failed = run_batch(not_json, good, no_secret, bad_time)
    assert failed == [not_json["messageId"], no_secret["messageId"], bad_time["messageId"]]
    assert fleet.drained("good")


# -- one mailbox, one run at a time -------------------------------------------------


def test_duplicate_jobs_for_one_mailbox_run_one_after_the_other_and_once(
    make_dovecot: Callable[..., DovecotServer],
    fleet: Fleet,
    output: CapturedOutput,
) -> None:
    # A second session while one is open would get [IN-USE] from this server.
    fleet.dovecot = make_dovecot(lock_session=True)
    proxy = through_proxy(fleet)
    secret_id = fleet.mailbox("dana")
    same_tick = tick(30)
    jobs = [job(secret_id, same_tick), job(secret_id, same_tick), job(secret_id, tick(10))]
    assert run_batch(*jobs) == []
    assert fleet.drained("dana")
    # One session: the later jobs found the mailbox had run since their ticks.
    assert proxy.connections == 1
    assert [line["outcome"] for line in run_lines(output)] == ["completed"]
    assert metric_total(output, "JobsStale") == 2
    assert not [r for r in output.records() if r.get("outcome") == "busy"]


# -- stale jobs ----------------------------------------------------------------------


def test_a_job_older_than_any_interval_is_dropped_unread(
    fleet: Fleet, output: CapturedOutput
) -> None:
    proxy = through_proxy(fleet)
    secret_id = fleet.mailbox("dana")
    # Its secret is gone too: reading it would report the mailbox misconfigured.
    fleet.aws.secretsmanager.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    assert run_batch(job(secret_id, tick(2 * HOUR))) == []
    assert proxy.connections == 0
    assert run_lines(output) == []
    dropped = [r for r in output.records() if r.get("message") == "job dropped: stale"]
    assert [r["secret_id"] for r in dropped] == [secret_id]
    assert metric_total(output, "JobsStale") == 1


def test_a_job_whose_mailbox_ran_since_its_tick_does_not_log_in(
    fleet: Fleet, output: CapturedOutput
) -> None:
    proxy = through_proxy(fleet)
    secret_id = fleet.mailbox("dana")
    earlier = tick(120)
    assert run_batch(job(secret_id, tick(60))) == []
    assert proxy.connections == 1
    fleet.dovecot.deliver("dana", corpus.simple(500).raw_for_maildir)
    # Delivered late, after a newer tick's run: that run stands for it.
    assert run_batch(job(secret_id, earlier)) == []
    assert proxy.connections == 1
    assert fleet.dovecot.message_count("dana") == 1  # left for the next tick
    # A job without a tick (sent by hand) is never stale.
    assert run_batch(job(secret_id)) == []
    assert proxy.connections == 2
    assert fleet.dovecot.message_count("dana") == 0


# -- secrets -------------------------------------------------------------------------


@dataclass
class SecretCalls:
    """Secrets Manager calls made through the provider the handler uses."""

    counted: Counter[str] = field(default_factory=Counter)

    def __call__(self, model: Any, **_: Any) -> None:
        self.counted[model.name] += 1


@pytest.fixture
def secret_calls(fleet: Fleet) -> SecretCalls:
    """The default secrets provider, with a client whose calls are counted
    (``parameters.clear_caches()`` drops it after the test)."""
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

    from pop3_ingest.integrations.secrets import MailboxSecrets

    calls = SecretCalls()
    client = boto3.session.Session().client("secretsmanager")
    client.meta.events.register("before-call.secrets-manager", calls)
    DEFAULT_PROVIDERS["secrets"] = MailboxSecrets(boto3_client=client)
    return calls


def test_a_batch_reads_its_secrets_in_one_call_and_a_missing_one_fails_alone(
    fleet: Fleet, secret_calls: SecretCalls, output: CapturedOutput
) -> None:
    through_proxy(fleet)
    users = ["ann", "ben", "cat"]
    jobs = [job(fleet.mailbox(user), tick()) for user in users]
    assert run_batch(*jobs, job("pop3/nobody", tick())) == []
    assert secret_calls.counted == Counter({"BatchGetSecretValue": 1})
    assert all(fleet.drained(user) for user in users)
    outcomes = {line["mailbox"]: line["outcome"] for line in run_lines(output)}
    assert outcomes == dict.fromkeys(users, "completed") | {"pop3/nobody": "misconfigured"}
    # The next batch in this warm container finds them cached: no call at all.
    assert run_batch(*(job(f"pop3/{user}", tick()) for user in users)) == []
    assert secret_calls.counted == Counter({"BatchGetSecretValue": 1})
